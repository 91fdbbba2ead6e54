"""cluster/: every manifest parses, every entrypoint is a real command with valid flags, and the pieces
agree with each other (images, versions, RBAC, mounts)."""

from __future__ import annotations

import copy
import importlib
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
import yaml

from jobs.catalog import settings as catalog
from jobs import submit
from jobs.batch.settings import parse_args as parse_job_settings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
YAML_FILES = sorted(CLUSTER.rglob("*.yaml"))
ENTRY_RE = re.compile(r"python3?\s+-m\s+(jobs\.\w+)")
SEPARATORS = {"&&", "||", ";", "|", "&"}
PROJECT_IMAGE_TAG = "ray2.60.0-py311-gpu"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strings(node: Any) -> Iterator[str]:
    """Every string in a YAML tree, descending into strings that are YAML documents themselves
    (a ConfigMap holding a RayJob, a RayJob holding its runtime env)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node
        if "\n" in node:
            try:
                inner = yaml.safe_load(node)
            except yaml.YAMLError:
                return
            if isinstance(inner, (dict, list)):
                yield from _strings(inner)


def entrypoints(text: str) -> list[tuple[str, list[str]]]:
    """``(module, argv)`` for each ``python -m jobs.X ...`` in shell text (continuations joined)."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for m in ENTRY_RE.finditer(line):
            rest = line[m.end():]
            if line[:m.start()].endswith("`"):  # inline code in prose: the command ends at the backtick
                rest = rest.split("`", 1)[0]
            tokens = shlex.split(rest, comments=True)
            cut = next((i for i, t in enumerate(tokens) if t in SEPARATORS), len(tokens))
            argv = tokens[:cut]
            if m.group(1) == "jobs.submit":
                argv = submit.split_argv(argv)[0]  # the command after -- is matched on its own
            found.append((m.group(1), argv))
    return found


def _all_entrypoints() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in YAML_FILES:
        comments = "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines()
                              if line.lstrip().startswith("#"))  # usage examples in the header comments
        texts = [s for doc in _docs(path) for s in _strings(doc)] + [comments]
        for text in texts:
            out += [(path.name, mod, argv) for mod, argv in entrypoints(text)]
    readme = (CLUSTER / "README.md").read_text()
    out += [("README.md", mod, argv) for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
            for mod, argv in entrypoints(block)]
    return out


def _unique(items: list[tuple[str, str, list[str]]]) -> list[tuple[str, str, list[str]]]:
    seen, out = set(), []
    for f, m, a in items:
        if (f, m, tuple(a)) not in seen:
            seen.add((f, m, tuple(a)))
            out.append((f, m, a))
    return out


ENTRYPOINTS = _unique(_all_entrypoints())


# Each command's parser, where its code lives (the commands are thin modules or packages' __main__).
PARSERS = {
    "jobs.stylize": "jobs.batch.settings:build_parser",
    "jobs.stylize_image": "jobs.image.settings:build_parser",
    "jobs.stylize_video": "jobs.video.settings:build_parser",
    "jobs.catalog": "jobs.catalog.settings:build_parser",
    "jobs.train": "jobs.train.settings:build_parser",
    "jobs.styles": "jobs.styles:build_parser",
    "jobs.submit": "jobs.submit:build_parser",
}


def command_parser(command: str):
    module_name, _, attr = PARSERS[command].partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def test_every_manifest_parses_as_yaml():
    assert {p.name for p in YAML_FILES} >= {"raycluster.yaml", "rayjob-stylize.yaml", "cronjob-nightly.yaml",
                                          "runtime_env.yaml", "cluster.yaml", "serviceaccount.yaml"}
    for path in YAML_FILES:
        assert _docs(path), f"{path} is empty"


def test_entrypoints_are_found_in_every_kind_of_file():
    where = {(f, m) for f, m, _ in ENTRYPOINTS}
    assert {("rayjob-stylize.yaml", "jobs.stylize"), ("cronjob-nightly.yaml", "jobs.catalog"),
            ("cluster.yaml", "jobs.submit"), ("README.md", "jobs.catalog")} <= where


@pytest.mark.parametrize("source,module,argv", ENTRYPOINTS, ids=[f"{f}:{m}:{i}" for i, (f, m, _) in enumerate(ENTRYPOINTS)])
def test_entrypoint_parses_with_the_project_parser(source, module, argv):
    parser = command_parser(module)
    if "--help" in argv:  # a pointer to the usage text, not a run: it must print the usage and exit 0
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 0, f"{source}: `python -m {module} {shlex.join(argv)}` does not print its help"
        return
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{source}: `python -m {module} {shlex.join(argv)}` is rejected by {module}'s parser")
    if module == "jobs.stylize":
        settings = parse_job_settings(argv)  # NAME=URI forms, value ranges
        assert not settings.demo, f"{source}: a cluster run must name its --input"
        if any(a.startswith("s3://") for a in argv):
            assert settings.gpus_per_actor, f"{source}: a GPU-cluster run must ask for GPUs (autoscaling starts at 0)"


def test_entrypoint_extraction_rejects_bad_flags():
    (mod, argv), = entrypoints("run: python -m jobs.stylize --input x --no-such-flag && echo done")
    assert (mod, argv) == ("jobs.stylize", ["--input", "x", "--no-such-flag"])
    with pytest.raises(SystemExit):
        command_parser(mod).parse_args(argv)


def _by_kind(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in _docs(path):
        out.setdefault(doc["kind"], []).append(doc)
    return out


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__ == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})  # a CPU head
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = spec["workerGroupSpecs"]
    gpu = [g for g in groups if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu, "no GPU worker group"
    for g in gpu:
        assert g["minReplicas"] < g["maxReplicas"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for pod in [head] + groups:
        pod_spec = pod["template"]["spec"]
        assert pod_spec["serviceAccountName"] == "stylize-ray"
        for c in pod_spec["containers"]:
            assert c["image"].endswith(PROJECT_IMAGE_TAG), c["image"]


def test_kuberay_manifests_agree():
    sa = _by_kind(CLUSTER / "kuberay" / "serviceaccount.yaml")["ServiceAccount"][0]
    assert sa["metadata"]["name"] == "stylize-ray"
    _check_ray_cluster_spec(_by_kind(CLUSTER / "kuberay" / "raycluster.yaml")["RayCluster"][0]["spec"])
    job = _by_kind(CLUSTER / "kuberay" / "rayjob-stylize.yaml")["RayJob"][0]
    assert job["apiVersion"] == "ray.io/v1" and job["spec"]["shutdownAfterJobFinishes"] is True
    _check_ray_cluster_spec(job["spec"]["rayClusterSpec"])
    ray.runtime_env.RuntimeEnv(**yaml.safe_load(job["spec"]["runtimeEnvYAML"]))
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-py311-gpu$", dockerfile, re.M)
    assert "torch==2.14.1" in dockerfile and "torch==2.14.1" in (ROOT / "pyproject.toml").read_text()


def test_nightly_cronjob_creates_a_catalog_rayjob(tmp_path):
    kinds = _by_kind(CLUSTER / "kuberay" / "cronjob-nightly.yaml")
    cron = kinds["CronJob"][0]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    # RBAC: the pod's ServiceAccount is bound to a Role that may create RayJobs.
    account = pod["serviceAccountName"]
    assert account in {sa["metadata"]["name"] for sa in kinds["ServiceAccount"]}
    binding = next(b for b in kinds["RoleBinding"] if any(s["name"] == account for s in b["subjects"]))
    role = next(r for r in kinds["Role"] if r["metadata"]["name"] == binding["roleRef"]["name"])
    assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and {"create", "get"} <= set(r["verbs"])
               for r in role["rules"])
    # The pod creates the RayJob held in the mounted ConfigMap, and waits for it (so Forbid means something).
    maps = {m["metadata"]["name"]: m for m in kinds["ConfigMap"]}
    mounted = {v["name"]: v["configMap"]["name"] for v in pod["volumes"]}
    mount = pod["containers"][0]["volumeMounts"][0]
    script = "\n".join(pod["containers"][0]["args"])
    assert f"kubectl create -f {mount['mountPath']}/rayjob.yaml" in script and "jobDeploymentStatus" in script
    rayjob = yaml.safe_load(maps[mounted[mount["name"]]]["data"]["rayjob.yaml"])
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["generateName"]
    _check_ray_cluster_spec(rayjob["spec"]["rayClusterSpec"])
    # The catalog config it names is mounted into the head, where the driver runs, and is valid.
    (mod, argv), = entrypoints(rayjob["spec"]["entrypoint"])
    assert mod == "jobs.catalog"
    config_path = catalog.build_parser().parse_args(argv).config
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head_mount = next(m for m in head["containers"][0]["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    config_map = next(v for v in head["volumes"] if v["name"] == head_mount["name"])["configMap"]["name"]
    local = tmp_path / "nightly.yaml"
    local.write_text(maps[config_map]["data"][config_path.rsplit("/", 1)[-1]])
    settings = (catalog.parse_args(["--config", str(local)]))
    assert settings.input.startswith("s3://") and len(settings.styles) >= 1 and settings.gpus_per_actor == 1


def test_example_nightly_config_resolves():
    settings = (catalog.parse_args(["--config", str(CLUSTER / "nightly.example.yaml")]))
    assert settings.output.startswith("s3://") and set(settings.styles) == {"mosaic", "candy"}


def test_runtime_env_is_valid_and_excludes_the_environment():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    ray.runtime_env.RuntimeEnv(**env)
    assert ".venv/" in env["excludes"] and ".git/" in env["excludes"]
    assert "pip" not in env and "conda" not in env  # dependencies come from the image


def test_aws_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert config["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    gpu = [t for name, t in types.items() if t["resources"].get("GPU")]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert gpu and all(t["node_config"]["InstanceType"].startswith(("g4", "g5", "g6", "p3", "p4", "p5")) for t in gpu)
    assert all(t["min_workers"] < t["max_workers"] for t in gpu)
    assert any("torch==2.14.1" in c for c in config["setup_commands"])
    assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
