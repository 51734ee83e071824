"""Replay benchmarks: recorded expert answers to SQuAD questions, scored once.

A replay directory holds `questions.json` (SQuAD format), `predictions/<expert>.json`
(`{question_id: answer}`, "" = no answer) and `costs.json`
(`{"experts": {name: {"cost": c, ...}}}`). Routers are trained and judged on the
per-question x per-expert score matrices, so we compute them here exactly once, with the
official SQuAD rules, instead of letting every caller re-score answers its own way.

Not every expert answers every question (SQuAD 1.1 systems never saw the unanswerable
ones). Such cells are *uncovered*: their scores are NaN, not zero, because "the recording
has no answer" is not the same as "the expert answered wrong". Benchmarks use only the
questions every expert covers (`covered_only=True`, the default) so that all routers
and baselines are compared on identical ground.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from routing.answers.squad import SquadQuestion, load_squad, score_one
from routing.core.config import EXPERT_NAME


class ReplayDataError(ValueError):
    """A replay directory that does not have the documented layout."""


@dataclass(frozen=True)
class ReplaySet:
    """Questions, experts and their scored recorded answers.

    Arrays are indexed [question, expert]; experts are ordered by cost (then name) so
    that index 0 is always the cheapest, which keeps tie-breaking ("prefer the cheaper
    expert") a simple matter of taking the first index.
    """

    questions: tuple[SquadQuestion, ...]
    expert_names: tuple[str, ...]
    costs: np.ndarray  # (k,)
    f1: np.ndarray  # (n, k), NaN where uncovered
    em: np.ndarray  # (n, k), NaN where uncovered
    answers: tuple[tuple[Optional[str], ...], ...]  # [question][expert], None where uncovered
    covered: np.ndarray  # (n, k) bool

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def n_experts(self) -> int:
        return len(self.expert_names)

    @property
    def question_texts(self) -> list[str]:
        return [q.question for q in self.questions]

    @property
    def contexts(self) -> list[str]:
        return [q.context for q in self.questions]

    @property
    def titles(self) -> list[str]:
        return [q.title for q in self.questions]

    def expert_index(self, name: str) -> int:
        try:
            return self.expert_names.index(name)
        except ValueError:
            raise KeyError(f"unknown expert {name!r}; known: {list(self.expert_names)}") from None

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ReplaySet":
        """The same experts on a subset of the questions (in the given order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ReplaySet(
            questions=tuple(self.questions[i] for i in idx),
            expert_names=self.expert_names,
            costs=self.costs.copy(),
            f1=self.f1[idx].copy(),
            em=self.em[idx].copy(),
            answers=tuple(self.answers[i] for i in idx),
            covered=self.covered[idx].copy(),
        )

    def covered_only(self) -> "ReplaySet":
        """Only the questions that every expert answered in the recording."""
        return self.subset(np.flatnonzero(self.covered.all(axis=1)))

    def uncovered_as_wrong(self) -> "ReplaySet":
        """Score uncovered cells F1 = EM = 0 instead of NaN.

        For benchmarks over *all* questions: an expert with no recorded answer is one
        that was never built to abstain (a SQuAD 1.1 system on an unanswerable
        question), so in deployment it would answer something, and wrongly. Counting
        it as empty instead would credit it with a correct abstention it cannot make.
        """
        return ReplaySet(
            questions=self.questions,
            expert_names=self.expert_names,
            costs=self.costs.copy(),
            f1=np.where(self.covered, self.f1, 0.0),
            em=np.where(self.covered, self.em, 0.0),
            answers=self.answers,
            covered=self.covered.copy(),
        )


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a leading byte-order mark is not JSON
            return json.load(fh)
    except FileNotFoundError:
        raise ReplayDataError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ReplayDataError(f"{path}: not valid JSON ({exc})") from None


def read_costs(path: str | Path) -> dict[str, float]:
    """{expert: cost} from a costs.json, validated (finite, non-negative, sane names)."""
    data = _read_json(Path(path))
    experts = data.get("experts") if isinstance(data, dict) else None
    if not isinstance(experts, dict) or not experts:
        raise ReplayDataError(f"{path}: expected {{\"experts\": {{name: {{\"cost\": c}}}}}}")
    out: dict[str, float] = {}
    for name, spec in experts.items():
        if not EXPERT_NAME.match(name):
            raise ReplayDataError(f"{path}: expert name {name!r} has characters outside [A-Za-z0-9_.-]")
        cost = spec.get("cost") if isinstance(spec, dict) else None
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not np.isfinite(cost) or cost < 0:
            raise ReplayDataError(f"{path}: expert {name!r} needs a finite, non-negative \"cost\"")
        out[name] = float(cost)
    return out


def load_replay(path: str | Path, *, covered_only: bool = True) -> ReplaySet:
    """Load and score a replay directory.

    Every expert in costs.json must have a predictions file and vice versa: a silently
    ignored expert would make a benchmark look better or worse than it is.
    """
    root = Path(path)
    costs = read_costs(root / "costs.json")
    pred_dir = root / "predictions"
    if not pred_dir.is_dir():
        raise ReplayDataError(f"{pred_dir}: missing predictions directory")
    files = {p.stem: p for p in pred_dir.glob("*.json")}
    if set(files) != set(costs):
        missing = sorted(set(costs) - set(files))
        extra = sorted(set(files) - set(costs))
        raise ReplayDataError(
            f"{root}: experts in costs.json and predictions/ differ"
            + (f"; no predictions for {missing}" if missing else "")
            + (f"; no cost for {extra}" if extra else "")
        )
    names = sorted(costs, key=lambda n: (costs[n], n))
    predictions: list[dict[str, str]] = []
    for name in names:
        preds = _read_json(files[name])
        if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
            raise ReplayDataError(f"{files[name]}: expected {{question_id: answer_text}}")
        predictions.append(preds)

    if not (root / "questions.json").exists():
        raise ReplayDataError(f"{root / 'questions.json'}: missing")
    questions = load_squad(root / "questions.json")
    n, k = len(questions), len(names)
    f1 = np.full((n, k), np.nan)
    em = np.full((n, k), np.nan)
    covered = np.zeros((n, k), dtype=bool)
    answers: list[tuple[Optional[str], ...]] = []
    for i, q in enumerate(questions):
        golds = () if q.is_impossible else q.answers
        row: list[Optional[str]] = []
        for j, preds in enumerate(predictions):
            answer = preds.get(q.id)
            row.append(answer)
            if answer is not None:
                covered[i, j] = True
                em[i, j], f1[i, j] = score_one(answer, golds)
        answers.append(tuple(row))
    replay = ReplaySet(
        questions=tuple(questions),
        expert_names=tuple(names),
        costs=np.array([costs[n_] for n_ in names], dtype=np.float64),
        f1=f1,
        em=em,
        answers=tuple(answers),
        covered=covered,
    )
    return replay.covered_only() if covered_only else replay


def load_scored_replay(path: str | Path, *, covered_only: bool = True) -> ReplaySet:
    """What routers train and are judged on: the questions every expert covers, or, with
    `covered_only=False`, every question with uncovered cells counted as wrong
    (`ReplaySet.uncovered_as_wrong`)."""
    replay = load_replay(path, covered_only=covered_only)
    return replay if covered_only else replay.uncovered_as_wrong()


def _slug(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", title).strip("._")
    return slug or "untitled"


def write_replay_subset(src: str | Path, dst: str | Path, titles: Sequence[str]) -> int:
    """Copy the articles named in `titles` from one replay directory into another.

    Articles are copied as whole SQuAD JSON objects so nothing a downstream reader might
    need (ids, answer starts, plausible answers) is lost. Returns the question count.
    """
    src, dst = Path(src), Path(dst)
    doc = _read_json(src / "questions.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ReplayDataError(f"{src / 'questions.json'}: expected SQuAD JSON with a data list")
    wanted = set(titles)
    articles = [a for a in doc["data"] if a.get("title", "") in wanted]
    ids = {str(qa["id"]) for a in articles for p in a["paragraphs"] for qa in p["qas"]}
    (dst / "predictions").mkdir(parents=True, exist_ok=True)
    with open(dst / "questions.json", "w", encoding="utf-8") as fh:
        json.dump({**{k: v for k, v in doc.items() if k != "data"}, "data": articles}, fh, ensure_ascii=False)
    for pred_file in sorted((src / "predictions").glob("*.json")):
        preds = _read_json(pred_file)
        if not isinstance(preds, dict):
            raise ReplayDataError(f"{pred_file}: expected {{question_id: answer_text}}")
        kept = {qid: ans for qid, ans in preds.items() if qid in ids}
        with open(dst / "predictions" / pred_file.name, "w", encoding="utf-8") as fh:
            json.dump(kept, fh, ensure_ascii=False)
    shutil.copyfile(src / "costs.json", dst / "costs.json")
    return len(ids)


@dataclass(frozen=True)
class ArticleFold:
    """One cross-validation fold: test on one article, train on all the others."""

    test_article: str
    train_dir: Path
    test_dir: Path
    n_train: int
    n_test: int


def split_replay_by_article(src: str | Path, out: str | Path, *, overwrite: bool = False) -> list[ArticleFold]:
    """Write leave-one-article-out folds: OUT/<article>/train and OUT/<article>/test.

    Splitting by article (not by question) is what makes a router benchmark honest:
    questions on one paragraph share vocabulary and difficulty, so a random split lets
    a router memorise the article instead of learning when an expert fails. A
    `folds.json` manifest lists the folds for scripts.
    """
    src, out = Path(src), Path(out)
    read_costs(src / "costs.json")  # fail early on a broken source
    titles: list[str] = []
    for q in load_squad(src / "questions.json"):
        if q.title not in titles:
            titles.append(q.title)
    if len(titles) < 2:
        raise ReplayDataError(f"{src}: need at least two articles to split by article, found {len(titles)}")
    slugs = [_slug(t) for t in titles]
    if len(set(slugs)) != len(slugs):
        raise ReplayDataError(f"{src}: article titles collide after making them file names: {titles}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ReplayDataError(f"{out}: exists and is not empty; pass overwrite=True to replace it")
        shutil.rmtree(out)
    folds: list[ArticleFold] = []
    for title, slug in zip(titles, slugs):
        fold_dir = out / slug
        n_test = write_replay_subset(src, fold_dir / "test", [title])
        n_train = write_replay_subset(src, fold_dir / "train", [t for t in titles if t != title])
        folds.append(ArticleFold(title, fold_dir / "train", fold_dir / "test", n_train, n_test))
    manifest = {
        "source": str(src),
        "folds": [
            {"test_article": f.test_article, "train": str(f.train_dir.relative_to(out)),
             "test": str(f.test_dir.relative_to(out)), "n_train": f.n_train, "n_test": f.n_test}
            for f in folds
        ],
    }
    with open(out / "folds.json", "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return folds


def grouped_folds(replay: ReplaySet, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-article-out inside the training set, or a seeded 2-fold split if it has one article."""
    titles = replay.titles
    groups = sorted(set(titles))
    if len(groups) >= 2:
        return [
            (np.array([i for i, t in enumerate(titles) if t != g]), np.array([i for i, t in enumerate(titles) if t == g]))
            for g in groups
        ]
    perm = np.random.default_rng(seed).permutation(replay.n_questions)
    half = len(perm) // 2
    return [(perm[:half], perm[half:]), (perm[half:], perm[:half])]
