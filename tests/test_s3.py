"""s3:// in and out against a real S3 API server on loopback (moto's server mode).

The endpoint reaches every client only through AWS_ENDPOINT_URL, as it would for a
user of MinIO; no client may fall back to a public endpoint."""

import json
import os
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.batch_job import run_job
from pipelines.cli.score import read_answers
from routing.core.config import parse_config
from routing.answers.squad import load_squad

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "examples" / "data" / "squad-replay-slice"
SECRET = "planted-secret-Zq9x7Lw3"

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    """Ray started after the credentials are in the environment, so its workers see
    them through the standard chain, as they would on a cluster node."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_job_from_s3_to_s3(s3_server, s3_ray, tmp_path, capfd):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rb-input")
    s3.create_bucket(Bucket="rb-output")
    gold = load_squad(SLICE / "questions.json")[:60]
    for i in range(3):
        part = gold[i * 20 : (i + 1) * 20]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": [q.id for q in part], "question": [q.question for q in part], "context": [q.context for q in part]}), sink)
        s3.put_object(Bucket="rb-input", Key=f"questions/part-{i}.parquet", Body=sink.getvalue().to_pybytes())
    s3.put_object(Bucket="rb-input", Key="preds/nlnet.json", Body=(SLICE / "predictions/nlnet-single.json").read_bytes())

    cfg = parse_config(
        {
            "input": {"path": "s3://rb-input/questions/", "format": "parquet"},
            "output": {"path": "s3://rb-output/answers/run1"},
            "experts": [{"name": "nlnet", "kind": "replay", "predictions": "s3://rb-input/preds/nlnet.json", "cost": {"usd_per_item": 0.001}}],
            "router": {"kind": "fixed", "expert": "nlnet"},
        }
    )
    summary = run_job(cfg, progress=False)
    assert summary.rows_in == summary.rows_out == 60 and summary.exit_code == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rb-output", Prefix="answers/run1/")["Contents"]]
    assert "answers/run1/_summary.json" in keys and any(k.endswith(".parquet") for k in keys)
    answers, experts = read_answers("s3://rb-output/answers/run1")
    recorded = json.loads((SLICE / "predictions/nlnet-single.json").read_text())
    assert answers == {q.id: recorded[q.id] for q in gold} and set(experts.values()) == {"nlnet"}

    written = s3.get_object(Bucket="rb-output", Key="answers/run1/_summary.json")["Body"].read().decode()
    printed = capfd.readouterr()
    for text in (written, printed.out, printed.err, repr(summary)):
        assert SECRET not in text and "testing-key-id" not in text


def test_jsonl_and_squad_objects_that_start_with_a_byte_order_mark(s3_server, s3_ray, tmp_path):
    """Files exported by Windows tools start with EF BB BF; from S3 as from disk, the mark
    is skipped and the first row is answered under its own line number."""
    from routing.core.storage import UTF8_BOM

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rb-bom")
    gold = load_squad(SLICE / "questions.json")[:12]
    lines = [json.dumps({"id": q.id, "question": q.question, "context": q.context}).encode() for q in gold]
    s3.put_object(Bucket="rb-bom", Key="jsonl/part-0.jsonl", Body=UTF8_BOM + b"\r\n".join(lines) + b"\r\n")
    squad = json.loads((SLICE / "questions.json").read_text(encoding="utf-8"))
    squad["data"] = squad["data"][:1]
    s3.put_object(Bucket="rb-bom", Key="squad/part-0.json", Body=UTF8_BOM + json.dumps(squad).encode())
    n_squad = sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])
    for fmt, prefix, n_rows in (("jsonl", "jsonl", len(gold)), ("squad", "squad", n_squad)):
        out = tmp_path / fmt
        cfg = parse_config(
            {
                "input": {"path": f"s3://rb-bom/{prefix}/", "format": fmt},
                "output": {"path": str(out)},
                "experts": [{"name": "nlnet", "kind": "replay", "predictions": str(SLICE / "predictions/nlnet-single.json"), "cost": {"usd_per_item": 0.001}}],
                "router": {"kind": "fixed", "expert": "nlnet"},
            }
        )
        summary = run_job(cfg, progress=False)
        rows = pq.read_table(out).to_pylist()
        assert summary.rows_in == summary.rows_out == len(rows) == n_rows and summary.exit_code == 0, fmt
        assert all(r["error"] is None for r in rows), fmt
    by_source = {r["source"].rsplit(":", 1)[1]: r["id"] for r in pq.read_table(tmp_path / "jsonl").to_pylist()}
    assert by_source == {str(n): q.id for n, q in enumerate(gold, start=1)}


def test_missing_bucket_fails_before_compute_without_leaking(s3_server):
    from routing.core.config import ConfigError

    cfg = parse_config(
        {
            "input": {"path": "s3://no-such-bucket-rb/q/", "format": "parquet"},
            "output": {"path": "s3://rb-output/x"},
            "experts": [{"name": "a", "kind": "replay", "predictions": str(SLICE / "predictions/nlnet-single.json")}],
            "router": {"kind": "fixed", "expert": "a"},
        }
    )
    with pytest.raises(ConfigError) as err:
        run_job(cfg, progress=False)
    assert str(err.value).startswith("input.path:") and SECRET not in str(err.value)
