"""The online endpoint: a Ray Serve application that answers questions one request at
a time with the same router and the same experts as the batch job.

    HTTP -> ingress (checks the request) -> router deployment (RouteRows)
         -> one deployment per expert (AnswerWithExpert, @serve.batch, autoscaled
            between the expert's pool.min_actors and pool.max_actors)

Sharing is literal, not a re-implementation: the router replica runs the batch job's
`RouteRows` operator and every expert replica its `AnswerWithExpert` operator on a
WORK_SCHEMA table, so a question goes to the same expert, gets the same answer and is
priced by the same ledger code in both paths. Requests are moved between deployments
in sub-batches (one call per expert per request, never one per question), because
per-item remote calls were measured at about 15 per second on this hardware.

A call whose replica died under it (killed, OOM, node lost) is sent again with the same
rows until it is answered or the request's time runs out (`_until_answered`): every item
is idempotent (same question, same answer), so the service retries it instead of
handing a client a 503 that the client could only answer by sending the same request.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations
# (`request: Request`) at run time, and Serve's ingress wrapper hides this module's
# globals from it, so string annotations would not resolve.
import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from operators.schema import empty_row, rows_to_table
from operators.stages import AnswerWithExpert, RouteRows
from pipelines.resources import ResourcePlan, StageDemand
from pipelines.serve.request_body import Item, RequestError, check_declared_length, parse_answer_request
from routing.core.config import CascadeRouter, ConfigError, JobConfig, LearnedCascadeRouter, Resources, ServeSpec

log = logging.getLogger("routebatch")
# Inside a replica, Serve writes only its own logger to the replica's log file
# (logs/serve/replica_<app>_<deployment>_<id>.log, where an operator looks); records of
# other loggers were found nowhere, so the code that runs in replicas logs here.
replica_log = logging.getLogger("ray.serve")

# Pause before sending a call again after its replica died: short at first (Serve's
# handle routes the retry to another live replica at once, when there is one), growing
# to at most RETRY_MAX_DELAY_S while Serve starts a replacement, so that waiting
# requests do not spin on a deployment with no replica.
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0

APP_NAME = "routebatch"
ANSWER_PATH = "/v1/answer"
HEALTH_PATH = "/healthz"
# What an expert replica returns per row (the rest of the response comes from the router).
EXPERT_FIELDS = ("answer", "score", "cost_usd", "input_tokens", "output_tokens", "expert_seconds", "error")


def _rows_in(chunks: list[list[dict]]) -> int:
    """Batch size in rows, not in calls: each call carries one request's sub-batch."""
    return sum(len(c) for c in chunks)


def _work_table(rows: list[dict], expert: Optional[str] = None):
    return rows_to_table(empty_row(id=r["id"], question=r["question"], context=r["context"], expert=expert) for r in rows)


def _split(results: list[Any], chunks: list[list[dict]]) -> list[list[Any]]:
    out, start = [], 0
    for c in chunks:
        out.append(results[start : start + len(c)])
        start += len(c)
    return out


class RouterReplica:
    """Runs the batch job's router operator on every batch of requests, plus the
    router's per-expert scores when it has any (trained routers do)."""

    def __init__(self, router_spec: Any, expert_names: list[str], max_batch_rows: int, batch_wait_timeout_s: float) -> None:
        self.stage = RouteRows(router_spec, expert_names)
        self._scores = getattr(self.stage.router, "scores", None)
        self.route.set_max_batch_size(max_batch_rows)
        self.route.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def ready(self) -> bool:
        return True

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, batch_size_fn=_rows_in)
    async def route(self, chunks: list[list[dict]]) -> list[list[dict]]:
        rows = [r for c in chunks for r in c]
        routed = await asyncio.to_thread(self.stage, _work_table(rows))
        experts = routed.column("expert").to_pylist()
        scores: list[Optional[dict]] = [None] * len(rows)
        if self._scores is not None:
            scores = await asyncio.to_thread(self._scores, [r["question"] for r in rows], [r["context"] for r in rows])
        return _split([{"expert": e, "router_scores": s} for e, s in zip(experts, scores)], chunks)


class ExpertReplica:
    """One replica of one expert: the batch job's expert operator, fed by @serve.batch
    with up to the expert's `batch_size` rows gathered from concurrent requests."""

    def __init__(self, spec: Any, batch_wait_timeout_s: float, batch_timeout_s: Optional[float] = None) -> None:
        self.name = spec.name
        self.stage = AnswerWithExpert(spec, batch_timeout_s=batch_timeout_s)
        self.answer.set_max_batch_size(spec.batch_size)
        self.answer.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def ready(self) -> bool:
        return True

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=_rows_in)
    async def answer(self, chunks: list[list[dict]]) -> list[list[dict]]:
        rows = [r for c in chunks for r in c]
        # A thread, so that the replica keeps accepting (and batching) requests while a
        # model runs; @serve.batch runs one batch at a time, so the runner is never
        # called concurrently.
        done = await asyncio.to_thread(self.stage, _work_table(rows, self.name))
        return _split(done.select(list(EXPERT_FIELDS)).to_pylist(), chunks)


def replica_lost(exc: BaseException) -> bool:
    """Whether a call failed because the replica running it went away, as opposed to
    the replica's code raising. Ray reports a dead or unreachable actor as a
    RayActorError (ActorDiedError, ActorUnavailableError), possibly wrapped in a
    RayTaskError when it surfaced while resolving a chained call's argument. An
    expert's own failure on an item is never an exception here: AnswerWithExpert puts
    it in that row's `error` column (`expert_error: ...`), and it is answered as such."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        return True
    return isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), RayActorError)


class _Retries:
    """What one request's calls went through: how many were sent again, and the last
    replica loss, so that a request whose time ran out while a replacement was being
    awaited is told 503 (unavailable), not 504 (slow)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: Optional[BaseException] = None


async def _until_answered(call: Callable[[], Awaitable[Any]], what: str, retries: _Retries) -> Any:
    """`await call()`, made again (a new remote call with the same rows) each time its
    replica dies, until one is answered; the caller's `asyncio.wait_for` ends it when
    `serve.request_timeout_s` runs out. Only the answered call's result is used, so an
    item is answered and priced once however many replicas died under it."""
    delay = RETRY_FIRST_DELAY_S
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - only a lost replica is retried; the rest is re-raised
            if not replica_lost(exc):
                raise
            retries.count += 1
            retries.last = exc
            replica_log.warning("%s: its replica died (%s); sending the same rows again in %.2f s", what, type(exc).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(2 * delay, RETRY_MAX_DELAY_S)


api = FastAPI(title="routebatch", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"kind": kind, "detail": detail}})


@serve.ingress(api)
class Ingress:
    """Checks each request, asks the router, fans the rows out to the experts (one call
    per expert and sub-batch) and puts the answers back in request order."""

    def __init__(self, router: Any, experts: dict[str, Any], batch_sizes: dict[str, int], limits: dict[str, Any]) -> None:
        self.router = router
        self.experts = experts
        self.batch_sizes = batch_sizes
        self.limits = ServeSpec(**limits)

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        check_declared_length(request.headers.get("content-length"), limit)
        parts, size = [], 0
        async for part in request.stream():  # bodies without a length are cut off here
            size += len(part)
            if size > limit:
                raise RequestError(413, "body_too_large", f"the body has more than {limit} bytes")
            parts.append(part)
        return b"".join(parts)

    async def _answer_items(self, items: list[Item], retries: _Retries) -> list[dict]:
        rows = [{"id": it.id, "question": it.question, "context": it.context} for it in items]
        routed = await _until_answered(lambda: self.router.route.remote(rows), "router", retries)
        by_expert: dict[str, list[int]] = {}
        for i, r in enumerate(routed):
            by_expert.setdefault(r["expert"], []).append(i)
        calls, slots = [], []
        for name, idx in by_expert.items():
            if name not in self.experts:  # RouteRows refuses such routers at start-up; belt and braces
                raise RuntimeError(f"router chose unknown expert {name!r}")
            step = self.batch_sizes[name]
            for start in range(0, len(idx), step):
                part = idx[start : start + step]
                sub = [rows[i] for i in part]
                handle = self.experts[name]
                calls.append(_until_answered(lambda h=handle, sub=sub: h.answer.remote(sub), f"expert {name}", retries))
                slots.append(part)
        answered = await asyncio.gather(*calls)
        out: list[dict] = [{} for _ in rows]
        for part, results in zip(slots, answered):
            for i, res in zip(part, results):
                out[i] = {"id": rows[i]["id"], "expert": routed[i]["expert"], "router_scores": routed[i]["router_scores"], **res}
        return out

    @api.post(ANSWER_PATH)
    async def answer(self, request: Request) -> JSONResponse:
        try:
            body = await self._body(request)
            parsed = parse_answer_request(body, max_body_bytes=self.limits.max_body_bytes, max_items=self.limits.max_items)
        except RequestError as exc:
            return JSONResponse(status_code=exc.status, content=exc.body())
        retries = _Retries()
        try:
            results = await asyncio.wait_for(self._answer_items(parsed.items, retries), timeout=self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            if retries.last is not None:
                return _error(
                    503,
                    "unavailable",
                    f"a replica died and none answered within {self.limits.request_timeout_s:g} s "
                    f"({type(retries.last).__name__}, {retries.count} call(s) sent again); retry later",
                )
            return _error(504, "timeout", f"no answer within {self.limits.request_timeout_s:g} s; retry later or send fewer items")
        except Exception as exc:  # noqa: BLE001 - a failed deployment is the server's problem, said as such
            replica_log.exception("answering a request failed")
            return _error(503, "unavailable", f"the service could not answer ({type(exc).__name__}); retry later")
        return JSONResponse(content=results[0] if parsed.single else results)

    @api.get(HEALTH_PATH)
    async def healthz(self) -> JSONResponse:
        names = ["router", *self.experts]
        calls = [self.router.ready.remote(), *(h.ready.remote() for h in self.experts.values())]
        try:
            await asyncio.wait_for(asyncio.gather(*calls), timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse(status_code=503, content={"status": "not ready", "detail": type(exc).__name__, "deployments": names})
        return JSONResponse(content={"status": "ready", "router": "router", "experts": list(self.experts)})


def _cpu_actor_options(num_cpus: float) -> dict[str, Any]:
    """Actor options for the ingress and router replicas, which hold CPUs only (the
    same form as an expert's: Resources.ray_options)."""
    return Resources(num_cpus=num_cpus).ray_options()


def build_app(config: JobConfig) -> Any:
    """The Serve application for a job config (not yet running)."""
    s = config.serve
    names = [e.name for e in config.experts]
    router_rows = max(config.execution.batch_size, s.max_items)
    router = serve.deployment(RouterReplica).options(
        name="router",
        num_replicas=s.router_replicas,
        ray_actor_options=_cpu_actor_options(s.router_num_cpus),
        max_ongoing_requests=max(64, 2 * s.max_items),
    ).bind(config.router, names, router_rows, s.batch_wait_timeout_s)
    experts = {}
    for e in config.experts:
        experts[e.name] = serve.deployment(ExpertReplica).options(
            name=f"expert-{e.name}",
            autoscaling_config={
                "min_replicas": e.pool.min_actors,
                "initial_replicas": e.pool.min_actors,
                "max_replicas": e.pool.max_actors,
                "target_ongoing_requests": 2,
            },
            ray_actor_options=e.resources.ray_options(),
            # At least one full batch of single-row calls must be able to queue up.
            max_ongoing_requests=max(16, e.batch_size),
        ).bind(e, s.batch_wait_timeout_s, config.execution.batch_timeout_s)
    return serve.deployment(Ingress).options(
        name="ingress",
        num_replicas=1,
        ray_actor_options=_cpu_actor_options(s.ingress_num_cpus),
        max_ongoing_requests=256,
    ).bind(router, experts, {e.name: e.batch_size for e in config.experts}, s.model_dump())


def serve_plan(config: JobConfig) -> ResourcePlan:
    """What the application needs at its minimum size: the ingress, the router and each
    expert's min_replicas. Serve's controller and proxy ask for no CPU."""
    s = config.serve
    plan = ResourcePlan()
    plan.stages.append(StageDemand("serve.ingress_num_cpus", {"CPU": s.ingress_num_cpus}, 1, fix="lower serve.ingress_num_cpus"))
    plan.stages.append(
        StageDemand("serve.router_num_cpus", {"CPU": s.router_num_cpus}, s.router_replicas, fix="lower serve.router_num_cpus or serve.router_replicas")
    )
    for e in config.experts:
        plan.stages.append(
            StageDemand(
                f"experts.{e.name}",
                e.resources.demand(),
                e.pool.min_actors,
                fix=f"lower experts.{e.name}.resources or pool.min_actors, or add nodes that have them",
            )
        )
    return plan


class DeployFailed(RuntimeError):
    """The application did not reach RUNNING; the message says which deployment and why."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    started_ray: bool

    @property
    def answer_url(self) -> str:
        return self.url + ANSWER_PATH

    @property
    def health_url(self) -> str:
        return self.url + HEALTH_PATH


def _wait_until_running(timeout_s: float) -> None:
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return
        if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
            raise DeployFailed(f"the application failed to deploy: {_deployment_messages(app)}")
        if time.monotonic() > deadline:
            where = _deployment_messages(app) if app is not None else "no status yet"
            raise DeployFailed(
                f"the application was not running after {timeout_s:g} s (serve.deploy_timeout_s): {where}; "
                "a replica that cannot be placed waits for resources, so check the experts' resources"
            )
        time.sleep(0.5)


def _deployment_messages(app: Any) -> str:
    """One line per unhealthy deployment: its status and the last line of its message
    (for a constructor that raised, the exception itself, e.g. a missing file)."""
    parts = []
    for name, d in app.deployments.items():
        status = getattr(d.status, "value", str(d.status))
        if status == "HEALTHY":
            continue
        lines = [ln.strip() for ln in (d.message or "").splitlines() if ln.strip()]
        parts.append(f"{name}: {status}" + (f" ({lines[-1][:300]})" if lines else ""))
    return "; ".join(parts) or (app.message or str(app.status))


def check_servable(config: JobConfig) -> None:
    """ConfigError for a router the endpoint cannot run as the batch job does, or for a
    local model that is not where its config says (as the batch job's preflight checks).

    A cascade's later steps happen inside the batch job's expert stages; the endpoint
    would only ever ask its first stage, a silently different answer. Refused instead.
    """
    if isinstance(config.router, (CascadeRouter, LearnedCascadeRouter)):
        raise ConfigError(
            f"router.kind: {config.router.kind} runs in the batch job (routebatch run) only; routebatch serve does not run "
            "cascades yet, so serve this config with a fixed, rule or checkpoint router"
        )
    from pipelines.preflight_checks import check_model_sources

    check_model_sources(config.experts)


def start_endpoint(config: JobConfig, *, host: str = "127.0.0.1", port: int = 8000) -> Endpoint:
    """Start (or join) Ray, check the plan fits, deploy, and wait until it runs.

    Raises PlanDoesNotFit before deploying anything the cluster cannot host, and
    DeployFailed (after tearing the application down) when it does not come up within
    serve.deploy_timeout_s: never a silent wait for resources that will not come.
    """
    import os

    import ray

    from pipelines.batch_job import start_ray
    from pipelines.resources import check_plan_fits, reachable_nodes

    check_servable(config)
    started = start_ray(config)
    try:
        check_plan_fits(serve_plan(config), reachable_nodes(config.ray.cluster_config, config.ray.address or os.environ.get("RAY_ADDRESS")))
    except BaseException:
        if started:
            ray.shutdown()
        raise
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run_many(
            [serve.RunTarget(build_app(config), name=APP_NAME, route_prefix="/")],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        _wait_until_running(config.serve.deploy_timeout_s)
    except BaseException:
        _teardown(started)
        raise
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    return Endpoint(url=f"http://{shown}:{port}", started_ray=started and ray.is_initialized())


def _teardown(stop_ray: bool) -> None:
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()
        except Exception:  # noqa: BLE001 - shutting down must not mask the original error
            log.warning("serve.shutdown() failed", exc_info=True)
        if stop_ray:
            ray.shutdown()


def stop_endpoint(endpoint: Endpoint) -> None:
    """Shut Serve down, and Ray too when `start_endpoint` started it."""
    _teardown(endpoint.started_ray)
