"""Talk to a real Kubeflow Pipelines endpoint (REST v2beta1 via ``kfp.Client``): submit and schedule.

Both upload the compiled pipeline as a new VERSION of one named pipeline (so the KFP UI keeps the
history), find-or-create the experiment, then create a run or a recurring run. Credentials come
from the environment (KF_PIPELINES_TOKEN or kfp's own config), never from the command line.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bakeoff import env
from bakeoff.errors import BakeoffError
from pipelines.settings import RunConfig

KFP_EXPERIMENT_NAME = "bakeoff"  # the KFP experiment runs are filed under unless told otherwise


@dataclass
class Submitted:
    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str  # a run id, or a recurring run id for schedule
    url: str


def _client(host: str, namespace: str | None):
    import kfp

    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=env.kfp_token())
        client.get_kfp_healthz()
    except Exception as exc:  # connection refused, TLS, 401: all mean "cannot reach KFP"
        raise BakeoffError(f"cannot reach Kubeflow Pipelines at {host}: {str(exc).splitlines()[0][:200]}") from exc
    return client


def image_problem(image: str) -> str | None:
    """Why a cluster could not pull ``image`` (under ``localhost/``, or no registry host), or None when it can.

    A reference's first path part names a registry only when it has a dot or a port or is ``localhost``
    (Docker's rule); without one, a node pulls from Docker Hub, which never holds this project's image.
    """
    first, _, rest = image.partition("/")
    if first == "localhost" or first.startswith("localhost:"):
        return f"image {image} is under localhost/, which only this machine has"
    if not rest or not ("." in first or ":" in first):
        return f"image {image} names no registry host"
    return None


def is_loopback(host: str) -> bool:
    """True for a KFP endpoint on this machine (localhost, 127.0.0.0/8, ::1): a local cluster may hold local images."""
    name = urlparse(host if "://" in host else f"http://{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def package_images(package: str | Path) -> list[str]:
    """The container images a compiled pipeline's executors run (its first YAML document, the PipelineSpec)."""
    import yaml

    with open(package) as handle:
        spec = next(yaml.safe_load_all(handle), None) or {}
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    return sorted({e["container"]["image"] for e in executors.values() if "container" in e})


def check_images_for(host: str, images: list[str]) -> None:
    """Refuse images a remote cluster cannot pull, before any request reaches it (a loopback host may use them)."""
    if is_loopback(host):
        return
    for image in images:
        if problem := image_problem(image):
            raise BakeoffError(
                f"{problem}: the cluster at {host} cannot pull it; push the image to a registry and pass "
                "--image REGISTRY/NAME:TAG (or a --package compiled with one)"
            )


def validate_cron(cron: str) -> str:
    """KFP's scheduler wants 6 fields (seconds first); a 5-field crontab gets "0 " in front."""
    fields = cron.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise BakeoffError(f'cron "{cron}" needs 6 fields (sec min hour day month weekday), e.g. "0 0 3 * * 1"')
    return " ".join(fields)


def _upload(client, package: str, config: RunConfig, version: str | None) -> tuple[str, str]:
    name = config.settings.pipeline_name
    version = version or f"{name}-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(
            package, pipeline_name=name, description="Transfer-learning bake-off (bakeoff compile)"
        ).pipeline_id
    created = client.upload_pipeline_version(package, pipeline_version_name=version, pipeline_id=pipeline_id)
    return pipeline_id, created.pipeline_version_id


def _compiled(config: RunConfig, package: str | None, workdir: str) -> str:
    if package:
        if not Path(package).is_file():
            raise BakeoffError(f"no compiled pipeline at {package}; run `bakeoff compile --out {package}`")
        return package
    from pipelines.compile import compile_pipeline

    return compile_pipeline(str(Path(workdir, "pipeline.yaml")), config.settings, config.parameters)


def _recurring_runs_named(client, experiment_id: str, name: str) -> list[str]:
    """Ids of the experiment's recurring runs with this display name (all pages)."""
    import json

    query = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id, filter=query)
        found += [r.recurring_run_id for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return found


def _run_params(config: RunConfig) -> dict:
    params = config.parameters.model_dump()
    if not params["data_uri"]:
        raise BakeoffError("no data given; pass --data s3://BUCKET/PREFIX (the pods must be able to read it)")
    return params


def _prepare(
    host: str, config: RunConfig, experiment: str, package: str | None, version: str | None, namespace: str | None
):
    """What submit and schedule share: check parameters, reach KFP, upload a version, find the experiment."""
    params = _run_params(config)
    with tempfile.TemporaryDirectory() as workdir:
        compiled = _compiled(config, package, workdir)  # compiled here, before any request
        check_images_for(host, package_images(compiled))
        client = _client(host, namespace)
        pipeline_id, version_id = _upload(client, compiled, config, version)
    return client, params, pipeline_id, version_id, client.create_experiment(experiment, namespace=namespace)


def submit(
    host: str,
    config: RunConfig,
    *,
    experiment: str = KFP_EXPERIMENT_NAME,
    run_name: str | None = None,
    package: str | None = None,
    version: str | None = None,
    namespace: str | None = None,
) -> Submitted:
    """Upload a pipeline version and start one run of it with ``config.parameters``."""
    client, params, pipeline_id, version_id, exp = _prepare(host, config, experiment, package, version, namespace)
    run_name = run_name or f"{config.settings.pipeline_name}-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}"
    run = client.run_pipeline(
        exp.experiment_id, run_name, params=params, pipeline_id=pipeline_id, version_id=version_id
    )
    return Submitted(
        pipeline_id, version_id, exp.experiment_id, run.run_id, f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    )


def schedule(
    host: str,
    config: RunConfig,
    cron: str,
    *,
    experiment: str = KFP_EXPERIMENT_NAME,
    name: str | None = None,
    package: str | None = None,
    version: str | None = None,
    namespace: str | None = None,
) -> Submitted:
    """A recurring run: at most one at a time (max_concurrency 1) and no catch-up of missed slots.

    Unchanged data reuses the cached ingest and features; the gate registers nothing new unless it wins.
    """
    cron = validate_cron(cron)
    client, params, pipeline_id, version_id, exp = _prepare(host, config, experiment, package, version, namespace)
    name = name or f"{config.settings.pipeline_name}-retrain"
    previous = _recurring_runs_named(client, exp.experiment_id, name)
    job = client.create_recurring_run(
        exp.experiment_id,
        name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enabled=True,
    )
    # Re-scheduling replaces: the new recurring run exists before the old ones go, so a failure in between
    # never leaves the team without a schedule, and a rerun (e.g. the infra Job) never leaves two.
    for old_id in previous:
        client.delete_recurring_run(old_id)
    return Submitted(
        pipeline_id,
        version_id,
        exp.experiment_id,
        job.recurring_run_id,
        f"{host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}",
    )
