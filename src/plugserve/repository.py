"""The Triton model repository on disk: file names, versions, config.pbtxt, manifest.json, staged commits.

config.pbtxt is built as a dict and parsed through Triton's own `model_config_pb2` schema, so a
misspelt field or a wrong enum fails here, at build time, rather than when tritonserver loads it.

Every build makes a new version. It is written into a staging directory beside the repository
(same filesystem, outside the tree tritonserver scans) and moved in with `rename`, so a failed or
killed build leaves the repository exactly as it was; the next build removes stale staging
directories of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugserve.config import InstanceGroup, ModelSpec
from plugserve.runners import contract

CONFIG_NAME = "config.pbtxt"
# The version's own copy of the config it was built with (hashed in its manifest): the model's
# config.pbtxt is replaced by each build, so an older version is served from this copy.
SERVED_CONFIG_NAME = "served_config.pbtxt"
MANIFEST_NAME = "manifest.json"
ONNX_FILE = "model.onnx"  # the name the onnxruntime runner loads
PLAN_FILE = "model.plan"  # tritonserver's default file name for platform tensorrt_plan
PROGRAM_FILE = "model.pt2"  # the torch.export program the torch runner loads
RUNTIME_PARAMETER = "plugserve_runtime"  # config.pbtxt parameter: the models.yaml runtime that built it
WARMUP_DIR = "warmup"  # tritonserver reads model_warmup input_data_file from <model>/warmup/


@dataclass(frozen=True)
class VersionFile:
    """A config.pbtxt value that must be the absolute path of a file of the version being built.

    A lowering writes into a staging directory that is renamed into the repository after the
    config is written, so it cannot know that path; build.py replaces each VersionFile with it
    (`resolve_version_files`). Triton's own backends open such paths as given (e.g. the
    onnxruntime backend dlopens `model_operations.op_library_filename`), not relative to the model.
    """

    name: str


def resolve_version_files(value: Any, staged_dir: Path, final_dir: Path) -> Any:
    """`value` (a config dict or part of one) with every VersionFile turned into its path under
    `final_dir`, the version's absolute path once committed; the file must exist in `staged_dir`."""
    if isinstance(value, VersionFile):
        if not (staged_dir / value.name).is_file():
            raise FileNotFoundError(f"config names {value.name} of the version directory, which the build did not write")
        return str(final_dir / value.name)
    if isinstance(value, dict):
        return {key: resolve_version_files(item, staged_dir, final_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_version_files(item, staged_dir, final_dir) for item in value]
    return value


def runner_spec(spec: ModelSpec) -> dict[str, Any]:
    """What a python-backend runner needs from models.yaml to check requests (JSON-serialisable)."""

    def tensors(items):
        return [{"name": t.name, "dtype": t.dtype, "dims": list(t.dims), "shape_tensor": t.shape_tensor,
                 "reject_non_finite": t.reject_non_finite} for t in items]

    found = {
        "inputs": tensors(spec.inputs),
        "outputs": tensors(spec.outputs),
        "profiles": [{name: r.as_dict() for name, r in profile.items()} for profile in spec.profiles],
        "max_batch_size": spec.max_batch_size,
    }
    # The largest request the profiles allow: the default of both budgets.
    largest = max(contract.request_elements(found, {t.name: profile[t.name].max for t in spec.inputs})
                  for profile in spec.profiles)
    found["budget"] = {"request_elements": spec.budget.request_elements or largest,
                       "batch_elements": spec.budget.batch_elements or largest}
    return found


def instance_group(group: InstanceGroup, kind: str) -> dict[str, Any]:
    """One config.pbtxt instance_group; `gpus` only when models.yaml lists them (absent: every GPU)."""
    entry: dict[str, Any] = {"count": group.count, "kind": kind}
    if group.gpus is not None:
        entry["gpus"] = list(group.gpus)
    return entry


def config_dict(
    spec: ModelSpec,
    backend: str,
    parameters: dict[str, str] | None = None,
    updates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model's config as a dict in `model_config_pb2.ModelConfig` field names.

    `updates` replaces top-level fields a lowering needs differently (e.g. TensorRT's
    `platform`, `instance_group` kind GPU, `is_shape_tensor` on inputs).
    """

    def tensors(items):
        return [{"name": t.name, "data_type": f"TYPE_{t.dtype}", "dims": list(t.dims)} for t in items]

    config: dict[str, Any] = {
        "name": spec.name,
        "backend": backend,
        "max_batch_size": spec.max_batch_size,
        "input": tensors(spec.inputs),
        "output": tensors(spec.outputs),
        "instance_group": [instance_group(g, g.kind) for g in spec.instance_groups],
        "version_policy": dict(spec.version_policy),
        "parameters": {key: {"string_value": value} for key, value in (parameters or {}).items()},
    }
    if spec.dynamic_batching is not None:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(spec.dynamic_batching.preferred_batch_size),
            "max_queue_delay_microseconds": spec.dynamic_batching.max_queue_delay_microseconds,
        }
    config.update(updates or {})
    return config


def warmup_requests(spec: ModelSpec, warmup_dir: Path, version: str, data: str = "zero_data") -> list[dict[str, Any]]:
    """config.pbtxt model_warmup: one request per profile at its opt shapes, sent to every instance as
    it loads. Shape tensors need real values, which tritonserver reads from files in <model>/warmup/
    (named per version: versions share the folder). `data` fills the other inputs: zeros by default,
    since Triton's random bytes can be NaN, which the runners refuse."""
    import numpy as np

    requests = []
    for index, profile in enumerate(spec.profiles):
        ordinary = [name for name in profile if not spec.input(name).shape_tensor]
        batch = profile[ordinary[0]].opt[0] if spec.max_batch_size > 0 and ordinary else 1
        inputs: dict[str, Any] = {}
        for name, bounds in profile.items():
            tensor = spec.input(name)
            entry: dict[str, Any] = {"data_type": f"TYPE_{tensor.dtype}"}
            if tensor.shape_tensor:
                file_name = f"v{version}_profile{index}_{name}"
                warmup_dir.mkdir(parents=True, exist_ok=True)
                (warmup_dir / file_name).write_bytes(np.array(bounds.opt, dtype=contract.DTYPES[tensor.dtype]).tobytes())
                entry.update(dims=list(tensor.dims), input_data_file=file_name)
            else:
                entry.update({"dims": list(bounds.opt[1:] if spec.max_batch_size > 0 else bounds.opt), data: True})
            inputs[name] = entry
        requests.append({"name": f"profile{index}_opt", "batch_size": batch, "inputs": inputs})
    return requests


def to_message(config: dict[str, Any]):
    """Parse a config dict through Triton's schema; unknown fields and bad enum values raise ValueError."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    try:
        return json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as error:
        raise ValueError(f"config for model {config.get('name')!r} does not fit Triton's schema: {error}") from error


def to_dict(message) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def write_config(config: dict[str, Any], path: Path) -> Path:
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(to_message(config)))
    return path


def read_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def read_parameters(message) -> dict[str, str]:
    return {key: value.string_value for key, value in message.parameters.items()}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_hashes(version_dir: Path) -> dict[str, str]:
    """sha256 of every file under a version directory except the manifest itself, by relative path."""
    return {
        str(p.relative_to(version_dir)): sha256_file(p)
        for p in sorted(version_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME and "__pycache__" not in p.parts
    }


def write_manifest(version_dir: Path, config_path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json: `record` (model, version, runtime, source, versions, ...) plus artifact hashes."""
    manifest = dict(record)
    manifest["artifacts"] = artifact_hashes(version_dir)
    manifest["config_sha256"] = sha256_file(config_path)
    (version_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / MANIFEST_NAME).read_text())


def verify_manifest(version_dir: Path) -> list[str]:
    """Files whose content no longer matches the manifest (missing, changed, or not listed)."""
    recorded = read_manifest(version_dir)["artifacts"]
    present = artifact_hashes(version_dir)
    return sorted(
        name for name in recorded.keys() | present.keys() if recorded.get(name) != present.get(name)
    )


def version_problems(model_dir: Path, version: int, *, newest: bool = False) -> list[str]:
    """Why a version must not be served, one line per file (empty: every file matches its manifest,
    and its config is the one it was built with). The newest version is served by the model's
    config.pbtxt, which must then be the one its build wrote."""
    version_dir = model_dir / str(version)
    try:
        manifest = read_manifest(version_dir)
    except FileNotFoundError:
        return [f"{MANIFEST_NAME} is missing"]
    except (ValueError, OSError) as error:
        return [f"{MANIFEST_NAME} is unreadable: {error}"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        return [f"{MANIFEST_NAME} has no artifacts table"]
    problems = [f"{name} does not match {MANIFEST_NAME}" for name in verify_manifest(version_dir)]
    if newest or not (version_dir / SERVED_CONFIG_NAME).is_file():
        # Built before versions kept their config, only the model's config.pbtxt can serve an older one.
        config = model_dir / CONFIG_NAME
        if not config.is_file() or sha256_file(config) != manifest.get("config_sha256"):
            problems.append(f"{model_dir.name}/{CONFIG_NAME} does not match {MANIFEST_NAME}")
    return problems


def version_config(model_dir: Path, version: int) -> Path:
    """The config a version is served with: the model's for the newest, else the version's own copy
    (the model's for versions built before copies)."""
    own = model_dir / str(version) / SERVED_CONFIG_NAME
    return own if own.is_file() and version != max(versions(model_dir)) else model_dir / CONFIG_NAME


def policy_versions(config: dict[str, Any], present: list[int]) -> list[int]:
    """The versions of `present` (ascending) that a config's version_policy serves, ascending."""
    policy = config.get("version_policy") or {"latest": {"num_versions": 1}}
    if "all" in policy:
        return present
    if "specific" in policy:
        wanted = {int(v) for v in policy["specific"].get("versions", [])}
        return [v for v in present if v in wanted]
    return present[-int(policy["latest"].get("num_versions", 1)):]


def versions(model_dir: Path) -> list[int]:
    """Version numbers present under a model directory, ascending (Triton's numeric subdirectories)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def served_version_dir(model_dir: Path) -> Path | None:
    """The version tritonserver serves under its default policy (the highest number), or None."""
    found = versions(model_dir)
    return model_dir / str(found[-1]) if found else None


def served_version_dirs(repository: Path) -> list[Path]:
    """Per model of the repository, its served version directory."""
    model_dirs = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [d for d in map(served_version_dir, model_dirs) if d is not None]


# Staging: a build is assembled beside the repository and committed by renames.


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_root(repository_dir: Path) -> Path:
    """Beside the repository: same filesystem (rename is atomic), not scanned by tritonserver."""
    return repository_dir.parent / f".{repository_dir.name}.staging"


def clean_stale_staging(root: Path) -> None:
    """Remove what builds of processes that no longer run left in the staging root."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        pid = entry.name.split("-")[1] if entry.name.startswith("build-") else ""
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def remove_if_empty(root: Path) -> None:
    with contextlib.suppress(OSError):
        root.rmdir()  # fails unless empty: another build may be staging there


def commit(staged_model: Path, model_dir: Path, version: int) -> None:
    """Move a staged build into the repository with renames only.

    A new model moves in as one directory. An existing one takes the version directory first,
    then config.pbtxt (`os.replace`); each step is atomic, and between them the repository holds
    the new version beside the previous, still valid, config.
    """
    if not model_dir.exists():
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        staged_model.rename(model_dir)
        return
    # model_warmup input files live in <model>/warmup/, shared by versions (named per version).
    warmup = staged_model / WARMUP_DIR
    if warmup.is_dir():
        (model_dir / WARMUP_DIR).mkdir(exist_ok=True)
        for item in warmup.iterdir():
            os.replace(item, model_dir / WARMUP_DIR / item.name)
    (staged_model / str(version)).rename(model_dir / str(version))
    os.replace(staged_model / CONFIG_NAME, model_dir / CONFIG_NAME)


def uncommit(model_dir: Path, version: int, previous_config: Path | None, trash_root: Path) -> None:
    """Undo `commit` of `version`: the model's config back to `previous_config` (a copy taken before
    the commit) first, then the version and its warmup files out; a model that was new goes whole."""
    if previous_config is None:
        _remove(model_dir, trash_root)
        return
    os.replace(previous_config, model_dir / CONFIG_NAME)
    for item in (model_dir / WARMUP_DIR).glob(f"v{version}_*"):
        item.unlink()
    _remove(model_dir / str(version), trash_root)


@contextlib.contextmanager
def build_lock(repository_dir: Path, waiting: Any = None):
    """Hold the repository's build lock (a flock on a file beside it): concurrent builds queue, so two
    never pick the same version number. `waiting(path)` is called when another build holds it."""
    import fcntl

    path = repository_dir.parent / f".{repository_dir.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def serving_dir(repository_dir: Path) -> Path:
    """Beside the repository: one file per running `plugserve serve`, naming what it loaded."""
    return repository_dir.parent / f".{repository_dir.name}.serving"


def write_serving_record(repository_dir: Path, record: dict[str, Any]) -> Path:
    """Record (readable by this user only: it holds the admin key) what this process's server loaded."""
    directory = serving_dir(repository_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        json.dump(record, f)
    return path


def serving_records(repository_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """(pid, record) of each running `plugserve serve` of the repository; records of processes that
    no longer run are removed, unreadable ones skipped."""
    found = []
    directory = serving_dir(repository_dir)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if not path.stem.isdigit() or not _pid_alive(int(path.stem)):
            path.unlink(missing_ok=True)
            continue
        with contextlib.suppress(ValueError, OSError):
            record = json.loads(path.read_text())
            if isinstance(record, dict):
                found.append((int(path.stem), record))
    return found


def prune(model_dir: Path, keep: int, trash_root: Path, in_use: dict[int, str] | None = None) -> list[int]:
    """Remove all but the newest `keep` versions, except those in `in_use` (version -> the server
    that holds it); each leaves the tree with one rename, then is deleted."""
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    removed = [v for v in versions(model_dir)[:-keep] if v not in (in_use or {})]
    for version in removed:
        _remove(model_dir / str(version), trash_root)
    return removed


def _remove(path: Path, trash_root: Path) -> None:
    """Out of the tree in one rename (tritonserver never sees half a directory), then deleted."""
    trash = trash_root / f"build-{os.getpid()}-remove-{path.parent.name}-{path.name}"
    trash_root.mkdir(parents=True, exist_ok=True)
    path.rename(trash)
    shutil.rmtree(trash)
