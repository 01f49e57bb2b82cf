"""Checks of the deployment files under deploy/: Kubernetes manifests, the RabbitMQ definitions and
configuration, the systemd units and the Containerfile, each against the others and against the
worker's own option names, so that a change to one is caught where it breaks another.

Run:  cd Tests/Deploy && /usr/bin/python3 -m unittest -v test_manifests

Needs python3-yaml (a missing one fails the YAML tests: apt-get install python3-yaml). Uses
systemd-analyze when present. Imports definitions.json into a scratch vhost of a running private
broker when IMAGE_WORKER_TEST_BROKER_CTL names deploy/lib/rabbitmq.sh (with BROKER_DIR set);
without it that test skips, or fails under CI=true.
"""

import configparser
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import uuid
from pathlib import Path

try:
    import yaml
except ImportError:  # reported by every test that needs it, as a failure
    yaml = None

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
RABBITMQ = DEPLOY / "rabbitmq"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"

# The worker's defaults that the files depend on.
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT = 60
# After graceful_shutdown_timeout the worker takes at most this long to cancel and close up
# (ServeCommand: maximumGracefulShutdownDuration = graceful_shutdown_timeout + 30 s).
SHUTDOWN_MARGIN = 30
DEFAULT_DOWNLOAD_TIMEOUT = 6 * 3600
CONFIG_PATH = "/etc/image-worker/image-worker.conf"
STATE_DIR = "/var/lib/image-worker"

def worker_options():
    """{section: {option: kind}} as the worker lists them (`image-worker config --list-options`,
    from its option table): the deploy files are checked against the worker itself, never
    against a copy of its list. IMAGE_WORKER_BIN names the binary (deploy/test.sh sets it)."""
    binary = os.environ.get("IMAGE_WORKER_BIN")
    if not binary:
        return None
    out = subprocess.run([binary, "config", "--list-options"], check=True, capture_output=True, text=True).stdout
    options = {}
    for line in out.splitlines():
        name, kind = line.split()
        section, option = name.split(".", 1)
        options.setdefault(section, {})[option] = kind
    return options


# Option names the worker reads; an unknown name in a shipped config is almost certainly a typo
# the worker would silently ignore.
WORKER_OPTIONS = worker_options()
BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def need_worker(test):
    if WORKER_OPTIONS is None:
        message = "IMAGE_WORKER_BIN is not set: the worker lists its options (deploy/test.sh sets it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            test.fail(message)
        test.skipTest(message)


def need_yaml(test):
    if yaml is None:
        test.fail("python3-yaml is missing: apt-get install python3-yaml")


def yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def strict_loader():
    """yaml.SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last silently;
    kubectl's strict decoding rejects it)."""
    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)
    return StrictLoader


def load_documents(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    # the same documents through a loader that refuses duplicate keys
    strict = [doc for doc in yaml.load_all(text, Loader=strict_loader()) if doc is not None]
    assert strict == documents
    return documents


def manifests():
    """Every Kubernetes object under deploy/kubernetes, as (path, document)."""
    found = []
    for path in yaml_files():
        if K8S in path.parents:
            found.extend((path, doc) for doc in load_documents(path))
    return found


def the_one(test, kind):
    objects = [doc for _, doc in manifests() if doc.get("kind") == kind]
    test.assertEqual(len(objects), 1, f"expected exactly one {kind} under {K8S}, found {len(objects)}")
    return objects[0]


def configmap_text(test):
    configmap = the_one(test, "ConfigMap")
    data = configmap.get("data") or {}
    test.assertIn("image-worker.conf", data, "the ConfigMap must hold image-worker.conf")
    return configmap, data["image-worker.conf"]


def parse_ini(text):
    # [DEFAULT] is an ordinary section in ironic.conf: don't let configparser copy it everywhere.
    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults", strict=True)
    parser.read_string(text)
    return parser


def worker_config(test):
    return parse_ini(configmap_text(test)[1])


def option(config, section, name, default=None):
    if config.has_section(section) and config.has_option(section, name):
        return config.get(section, name)
    return default


def graceful_shutdown_timeout(test):
    return int(option(worker_config(test), "image_worker", "graceful_shutdown_timeout", DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT))


def truthy(value):
    return str(value).strip().lower() in ("true", "yes", "on", "1")


def pod_template(test):
    deployment = the_one(test, "Deployment")
    return deployment, deployment["spec"]["template"]


def worker_container(test):
    deployment, template = pod_template(test)
    containers = template["spec"]["containers"]
    test.assertEqual(len(containers), 1, "one container per pod: the worker")
    return containers[0]


def container_port(container, port):
    """A probe's port (a number or a port name) as a number."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return entry["containerPort"]
    raise AssertionError(f"probe port {port!r} is not a named port of the container")


def definitions():
    with open(RABBITMQ / "definitions.json", encoding="utf-8") as handle:
        return json.load(handle)


def rabbitmq_conf():
    settings = {}
    for line in (RABBITMQ / "rabbitmq.conf").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"rabbitmq.conf: not 'key = value': {line!r}"
        settings[key.strip()] = value.strip()
    return settings


def parse_unit(path):
    """A systemd unit as {section: [(key, value)]}: keys may repeat, values may continue with '\\'."""
    sections, current, pending = {}, None, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            raise AssertionError(f"{path.name}: not a unit file line: {raw!r}")
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit, section, key):
    return [value for k, value in unit.get(section, []) if k == key]


def unit_value(unit, section, key):
    values = unit_values(unit, section, key)
    return values[-1] if values else None


def seconds(text):
    """A systemd time span ('120', '120s', '2min', '1min 30s') in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    if not parts:
        raise ValueError(f"not a time span: {text!r}")
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def containerfile_stages():
    """The Containerfile's stages: [(from_line, [instructions])], continuation lines joined."""
    instructions, pending = [], ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instructions.append(pending + stripped)
        pending = ""
    stages = []
    for instruction in instructions:
        word = instruction.split(None, 1)[0].upper()
        if word == "FROM":
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
    return stages


# ---------------------------------------------------------------------------------------------------

class YamlFilesTest(unittest.TestCase):
    def test_python3_yaml_is_installed(self):
        need_yaml(self)

    def test_every_yaml_file_parses_into_kubernetes_objects(self):
        need_yaml(self)
        paths = yaml_files()
        self.assertGreaterEqual(len(paths), 4, f"expected the Kubernetes manifests under {DEPLOY}")
        for path in paths:
            with self.subTest(file=str(path.relative_to(REPO))):
                documents = load_documents(path)
                self.assertTrue(documents, "no document")
                for doc in documents:
                    self.assertIsInstance(doc, dict)
                    for key in ("apiVersion", "kind", "metadata"):
                        self.assertIn(key, doc)
                    self.assertTrue(doc["metadata"].get("name"), "metadata.name is missing")

    def test_expected_kinds(self):
        need_yaml(self)
        kinds = sorted(doc["kind"] for _, doc in manifests())
        self.assertEqual(kinds, sorted(["ConfigMap", "Deployment", "PodDisruptionBudget", "ScaledObject",
                                        "TriggerAuthentication"]))
        apis = {doc["kind"]: doc["apiVersion"] for _, doc in manifests()}
        self.assertEqual(apis["Deployment"], "apps/v1")
        self.assertEqual(apis["PodDisruptionBudget"], "policy/v1")
        self.assertEqual(apis["ScaledObject"], "keda.sh/v1alpha1")
        self.assertEqual(apis["TriggerAuthentication"], "keda.sh/v1alpha1")


class ConfigMapTest(unittest.TestCase):
    def test_ini_parses_and_names_only_known_options(self):
        need_yaml(self)
        need_worker(self)
        config = worker_config(self)
        self.assertTrue(config.sections())
        for section in config.sections():
            self.assertIn(section, WORKER_OPTIONS, f"unknown section [{section}]")
            for name in config.options(section):
                self.assertIn(name, WORKER_OPTIONS[section], f"unknown option [{section}] {name}")

    def test_value_types(self):
        need_yaml(self)
        need_worker(self)
        config = worker_config(self)
        for section in config.sections():
            for name in config.options(section):
                kind = WORKER_OPTIONS.get(section, {}).get(name)
                value = option(config, section, name)
                with self.subTest(option=f"[{section}] {name}"):
                    if kind == "integer":
                        self.assertRegex(value, r"^\d+$")
                    elif kind == "boolean":
                        self.assertIn(value.lower(), BOOLEAN_WORDS)

    def test_settings_for_kubernetes(self):
        need_yaml(self)
        config = worker_config(self)
        self.assertEqual(option(config, "image_worker", "metrics_address"), "0.0.0.0:9464")
        self.assertEqual(option(config, "image_worker", "log_format"), "json")
        self.assertTrue(truthy(option(config, "oslo_messaging_rabbit", "rabbit_quorum_queue")))
        self.assertEqual(option(config, "oslo_messaging_rabbit", "rabbit_quorum_delivery_limit"), "20")
        self.assertEqual(option(config, "image_worker", "dead_letter_exchange"), "ironic.image_worker.dead_letter")
        self.assertEqual(option(config, "image_worker", "topic", "ironic.image_worker"), "ironic.image_worker")
        state_dir = option(config, "image_worker", "state_dir", STATE_DIR)
        self.assertEqual(state_dir, STATE_DIR)

    def test_no_secret_in_the_configmap(self):
        need_yaml(self)
        config = worker_config(self)
        self.assertIsNone(option(config, "DEFAULT", "transport_url"),
                          "transport_url carries the broker password: it comes from the Secret")
        for section in config.sections():
            for name in config.options(section):
                value = config.get(section, name)
                self.assertNotRegex(value, r"://[^/\s]*:[^/\s]*@", f"credentials in [{section}] {name}")
                self.assertNotIn(name, ("password", "token", "image_server_password"))


class DeploymentTest(unittest.TestCase):
    def test_probes(self):
        need_yaml(self)
        container = worker_container(self)
        metrics_port = int(option(worker_config(self), "image_worker", "metrics_address").rsplit(":", 1)[1])
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            with self.subTest(probe=probe):
                self.assertIn(probe, container)
                get = container[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertEqual(container_port(container, get["port"]), metrics_port)

    def test_termination_grace_exceeds_the_graceful_shutdown(self):
        need_yaml(self)
        _, template = pod_template(self)
        grace = template["spec"]["terminationGracePeriodSeconds"]
        timeout = graceful_shutdown_timeout(self)
        self.assertGreater(grace, timeout, "SIGKILL would come before running tasks had their time")
        self.assertGreater(grace, timeout + SHUTDOWN_MARGIN,
                           "SIGKILL would come before the worker requeued unfinished tasks")

    def test_security_context(self):
        need_yaml(self)
        _, template = pod_template(self)
        pod = template["spec"].get("securityContext", {})
        container = worker_container(self)
        own = container.get("securityContext", {})
        self.assertTrue(own.get("runAsNonRoot", pod.get("runAsNonRoot")), "runAsNonRoot")
        uid = own.get("runAsUser", pod.get("runAsUser"))
        self.assertIsNotNone(uid, "runAsUser: runAsNonRoot needs a numeric user to check")
        self.assertNotEqual(uid, 0)
        self.assertTrue(own.get("readOnlyRootFilesystem"), "readOnlyRootFilesystem")
        self.assertIs(own.get("allowPrivilegeEscalation"), False)
        self.assertEqual(own.get("capabilities", {}).get("drop"), ["ALL"])
        self.assertFalse(own.get("capabilities", {}).get("add"))
        seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
        self.assertEqual(seccomp.get("type"), "RuntimeDefault")
        self.assertFalse(template["spec"].get("hostNetwork"))

    def test_uid_matches_the_image(self):
        need_yaml(self)
        _, template = pod_template(self)
        uid = template["spec"]["securityContext"]["runAsUser"]
        user = [i for i in containerfile_stages()[-1][1] if i.upper().startswith("USER ")][-1]
        self.assertEqual(str(uid), user.split()[1].split(":")[0])

    def test_configuration_and_secret_wiring(self):
        need_yaml(self)
        configmap, _ = configmap_text(self)
        _, template = pod_template(self)
        container = worker_container(self)
        args = container.get("args", [])
        self.assertEqual(args[:1], ["serve"])
        self.assertIn("--config-file", args)
        config_file = args[args.index("--config-file") + 1]
        self.assertEqual(config_file, CONFIG_PATH)
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config_mount = mounts.get(str(Path(config_file).parent))
        self.assertIsNotNone(config_mount, "the ConfigMap must be mounted at the config file's folder")
        self.assertEqual(volumes[config_mount["name"]]["configMap"]["name"], configmap["metadata"]["name"])
        self.assertTrue(config_mount.get("readOnly"))
        env = {e["name"]: e for e in container.get("env", [])}
        self.assertIn("OS_DEFAULT__TRANSPORT_URL", env)
        self.assertNotIn("value", env["OS_DEFAULT__TRANSPORT_URL"], "the broker URL must come from a Secret")
        self.assertIn("secretKeyRef", env["OS_DEFAULT__TRANSPORT_URL"]["valueFrom"])
        for variable in env.values():
            self.assertNotRegex(str(variable.get("value", "")), r"://[^/\s]*:[^/\s]*@", f"credentials in {variable['name']}")

    def test_state_volume_is_mounted_at_state_dir(self):
        need_yaml(self)
        _, template = pod_template(self)
        container = worker_container(self)
        state_dir = option(worker_config(self), "image_worker", "state_dir", STATE_DIR)
        mount = {m["mountPath"]: m for m in container["volumeMounts"]}.get(state_dir)
        self.assertIsNotNone(mount, f"no volume at {state_dir}: the read-only root file system would refuse writes")
        self.assertFalse(mount.get("readOnly"))
        volume = {v["name"]: v for v in template["spec"]["volumes"]}[mount["name"]]
        self.assertTrue("emptyDir" in volume or "ephemeral" in volume or "persistentVolumeClaim" in volume)

    def test_labels_replicas_resources_and_scraping(self):
        need_yaml(self)
        deployment, template = pod_template(self)
        selector = deployment["spec"]["selector"]["matchLabels"]
        self.assertTrue(selector)
        self.assertLessEqual(selector.items(), template["metadata"]["labels"].items())
        self.assertEqual(deployment["spec"]["replicas"], 2)
        annotations = template["metadata"].get("annotations", {})
        self.assertEqual(annotations.get("prometheus.io/scrape"), "true")
        self.assertEqual(annotations.get("prometheus.io/port"), "9464")
        self.assertEqual(annotations.get("prometheus.io/path", "/metrics"), "/metrics")
        resources = worker_container(self).get("resources", {})
        self.assertIn("memory", resources.get("requests", {}))
        self.assertIn("memory", resources.get("limits", {}))


class PodDisruptionBudgetTest(unittest.TestCase):
    def test_selector_matches_the_deployment(self):
        need_yaml(self)
        pdb = the_one(self, "PodDisruptionBudget")
        deployment, template = pod_template(self)
        selector = pdb["spec"]["selector"]["matchLabels"]
        self.assertTrue(selector)
        self.assertLessEqual(selector.items(), template["metadata"]["labels"].items(),
                             "the PDB would protect no pod of the Deployment")
        self.assertEqual(pdb["metadata"].get("namespace"), deployment["metadata"].get("namespace"))
        spec = pdb["spec"]
        self.assertTrue(("maxUnavailable" in spec) != ("minAvailable" in spec), "exactly one of maxUnavailable, minAvailable")
        if "minAvailable" in spec:
            keda = the_one(self, "ScaledObject")
            self.assertLess(spec["minAvailable"], keda["spec"]["minReplicaCount"], "drains would block at the minimum size")
        else:
            self.assertGreaterEqual(spec["maxUnavailable"], 1)


class KedaTest(unittest.TestCase):
    def test_trigger_follows_the_worker_configuration(self):
        need_yaml(self)
        config = worker_config(self)
        scaled = the_one(self, "ScaledObject")
        deployment, _ = pod_template(self)
        self.assertEqual(scaled["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"])
        self.assertEqual(scaled["spec"]["scaleTargetRef"].get("kind", "Deployment"), "Deployment")
        self.assertGreaterEqual(scaled["spec"]["minReplicaCount"], 1, "the per-host and fanout queues need a consumer")
        self.assertGreater(scaled["spec"]["maxReplicaCount"], scaled["spec"]["minReplicaCount"])
        triggers = scaled["spec"]["triggers"]
        self.assertEqual(len(triggers), 1)
        trigger = triggers[0]
        self.assertEqual(trigger["type"], "rabbitmq")
        metadata = trigger["metadata"]
        self.assertEqual(metadata["queueName"], option(config, "image_worker", "topic", "ironic.image_worker"))
        self.assertEqual(metadata["mode"], "QueueLength")
        self.assertIn(metadata["protocol"], ("amqp", "http"))
        self.assertIsInstance(metadata["value"], str, "KEDA metadata values are strings")
        self.assertEqual(int(metadata["value"]), int(option(config, "image_worker", "max_concurrent_downloads", "20")))
        self.assertNotIn("host", metadata, "the broker URL holds a password: use the TriggerAuthentication")

    def test_authentication_uses_the_deployments_secret(self):
        need_yaml(self)
        scaled = the_one(self, "ScaledObject")
        auth = the_one(self, "TriggerAuthentication")
        self.assertEqual(scaled["spec"]["triggers"][0]["authenticationRef"]["name"], auth["metadata"]["name"])
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        self.assertIn("host", refs)
        env = {e["name"]: e for e in worker_container(self)["env"]}
        secret = env["OS_DEFAULT__TRANSPORT_URL"]["valueFrom"]["secretKeyRef"]["name"]
        self.assertEqual(refs["host"]["name"], secret)


class JsonFilesTest(unittest.TestCase):
    def test_every_json_file_parses(self):
        paths = sorted(DEPLOY.rglob("*.json"))
        self.assertIn(RABBITMQ / "definitions.json", paths)
        for path in paths:
            with self.subTest(file=str(path.relative_to(REPO))):
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)


class RabbitDefinitionsTest(unittest.TestCase):
    """definitions.json against what the worker declares (DeadLetterQueue.swift, RPCServerTopology.swift)."""

    def setUp(self):
        self.defs = definitions()
        need_yaml(self)
        self.config = worker_config(self)
        self.dlx = option(self.config, "image_worker", "dead_letter_exchange")
        self.topic = option(self.config, "image_worker", "topic", "ironic.image_worker")

    def test_vhosts_are_consistent(self):
        vhosts = {v["name"] for v in self.defs["vhosts"]}
        self.assertEqual(vhosts, {"/"})
        for kind in ("policies", "exchanges", "queues", "bindings"):
            for item in self.defs.get(kind, []):
                self.assertIn(item["vhost"], vhosts, f"{kind}: {item.get('name', item)}")

    def test_dead_letter_exchange_is_declared_as_the_worker_declares_it(self):
        exchanges = [e for e in self.defs["exchanges"] if e["name"] == self.dlx]
        self.assertEqual(len(exchanges), 1, f"exchange {self.dlx}")
        exchange = exchanges[0]
        self.assertEqual((exchange["type"], exchange["durable"], exchange["auto_delete"], exchange["internal"], exchange["arguments"]),
                         ("fanout", True, False, False, {}),
                         "must equal the worker's exchange.declare, or the broker refuses it (PRECONDITION_FAILED)")

    def test_dead_letter_queue_is_declared_as_the_worker_declares_it(self):
        queues = [q for q in self.defs["queues"] if q["name"] == self.dlx]
        self.assertEqual(len(queues), 1, f"queue {self.dlx}")
        queue = queues[0]
        quorum = truthy(option(self.config, "oslo_messaging_rabbit", "rabbit_quorum_queue", "false"))
        self.assertIs(queue["durable"], True)
        self.assertIs(queue["auto_delete"], False)
        self.assertEqual(queue["arguments"], {"x-queue-type": "quorum"} if quorum else {})
        bindings = [b for b in self.defs["bindings"] if b["destination"] == self.dlx]
        self.assertEqual([(b["source"], b["destination_type"], b["routing_key"], b["arguments"]) for b in bindings],
                         [(self.dlx, "queue", "", {})])

    def test_worker_queues_are_left_to_the_worker(self):
        names = {q["name"] for q in self.defs["queues"]}
        self.assertEqual(names, {self.dlx}, "the topic, per-host and fanout queues get their flags from the worker's options")
        self.assertNotIn(self.topic, {e["name"] for e in self.defs["exchanges"]})

    def matching(self, name):
        return [p for p in self.defs["policies"] if re.search(p["pattern"], name)]

    def test_policies_reach_the_work_and_host_queues_only(self):
        limit = int(option(self.config, "oslo_messaging_rabbit", "rabbit_quorum_delivery_limit"))
        for policy in self.defs["policies"]:
            with self.subTest(policy=policy["name"]):
                self.assertEqual(policy["apply-to"], "queues")
                self.assertEqual(policy["priority"], 10)
                self.assertEqual(policy["definition"]["dead-letter-exchange"], self.dlx)
                self.assertEqual(policy["definition"]["delivery-limit"], limit)
        # RabbitMQ applies the one matching policy of highest priority; equal priorities would be a
        # coin toss, so every worker queue must match exactly one.
        for name in (self.topic, f"{self.topic}.worker-1", f"{self.topic}.node-1.example.org",
                     f"{self.topic}.image-worker-5d8f7c9b6-x2x7q"):
            with self.subTest(queue=name):
                self.assertEqual(len(self.matching(name)), 1)
        # Fanout queues are per process and expire by themselves; the dead-letter queue must not
        # dead-letter into itself.
        for name in (f"{self.topic}_fanout_0123456789abcdef0123456789abcdef", self.dlx, "ironic",
                     f"{self.topic}2", "x" + self.topic, "ironic.conductor_manager"):
            with self.subTest(queue=name):
                self.assertEqual(self.matching(name), [])

    def test_only_host_queues_expire(self):
        [work] = self.matching(self.topic)
        self.assertNotIn("expires", work["definition"], "the shared work queue must never be deleted")
        [host] = self.matching(f"{self.topic}.worker-1")
        self.assertGreaterEqual(host["definition"].get("expires", 0), 24 * 3600 * 1000)


class RabbitConfTest(unittest.TestCase):
    def test_consumer_timeout_outlasts_a_download(self):
        settings = rabbitmq_conf()
        self.assertIn("consumer_timeout", settings)
        timeout = int(settings["consumer_timeout"])
        self.assertGreater(timeout, 30 * 60 * 1000, "no longer than RabbitMQ's default")
        download_timeout = DEFAULT_DOWNLOAD_TIMEOUT
        if yaml is not None:
            download_timeout = int(option(worker_config(self), "image_worker", "download_timeout", download_timeout))
        self.assertGreaterEqual(timeout, download_timeout * 1000, "shorter than [image_worker] download_timeout")


class SystemdUnitsTest(unittest.TestCase):
    UNITS = ("image-worker.service", "image-worker@.service")
    SANDBOXING = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "RestrictSUIDSGID": "yes",
        "RestrictRealtime": "yes", "CapabilityBoundingSet": "", "DynamicUser": "no",
        "User": "image-worker", "Group": "image-worker", "StateDirectory": "image-worker",
        "ConfigurationDirectory": "image-worker", "KillSignal": "SIGTERM", "Restart": "on-failure",
    }

    def unit(self, name):
        path = SYSTEMD / name
        self.assertTrue(path.is_file(), f"{path} is missing")
        return parse_unit(path)

    def test_service_settings(self):
        for name in self.UNITS:
            with self.subTest(unit=name):
                unit = self.unit(name)
                self.assertIn(unit_value(unit, "Service", "Type"), ("exec", "simple"))
                self.assertEqual(unit_value(unit, "Service", "ExecStart"),
                                 f"/usr/local/bin/image-worker serve --config-file {CONFIG_PATH}")
                for key, expected in self.SANDBOXING.items():
                    self.assertEqual(unit_value(unit, "Service", key), expected, key)
                self.assertIn(STATE_DIR, " ".join(unit_values(unit, "Service", "ReadWritePaths")).split())
                families = " ".join(unit_values(unit, "Service", "RestrictAddressFamilies")).split()
                self.assertEqual(sorted(families), ["AF_INET", "AF_INET6", "AF_UNIX"])
                self.assertIn("@system-service", unit_values(unit, "Service", "SystemCallFilter"))
                self.assertEqual(unit_value(unit, "Install", "WantedBy"), "multi-user.target")

    def test_stop_timeout_outlasts_the_graceful_shutdown(self):
        timeout = DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT
        for name in self.UNITS:
            with self.subTest(unit=name):
                stop = seconds(unit_value(self.unit(name), "Service", "TimeoutStopSec"))
                self.assertGreater(stop, timeout + SHUTDOWN_MARGIN,
                                   "systemd would SIGKILL the worker before it requeued unfinished tasks")

    def test_template_gives_each_instance_its_metrics_port(self):
        unit = self.unit("image-worker@.service")
        environment = " ".join(unit_values(unit, "Service", "Environment")).split()
        metrics = [e for e in environment if e.startswith("OS_IMAGE_WORKER__METRICS_ADDRESS=")]
        self.assertEqual(len(metrics), 1)
        self.assertIn("%i", metrics[0], "each instance needs its own port")
        self.assertNotIn("OS_DEFAULT__HOST", " ".join(environment), "instances share the host (and its state dir)")

    def verify_copy(self, directory, name, instance_name):
        """A copy whose ExecStart names an existing binary (verify checks it exists)."""
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        self.assertIn("/usr/local/bin/image-worker ", text)
        copy = Path(directory) / instance_name
        copy.write_text(text.replace("/usr/local/bin/image-worker ", shutil.which("true") + " "), encoding="utf-8")
        return copy

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed; the units were checked by parsing only")
        with tempfile.TemporaryDirectory() as directory:
            for name, instance in (("image-worker.service", "image-worker.service"),
                                   ("image-worker@.service", "image-worker@9465.service")):
                with self.subTest(unit=instance):
                    copy = self.verify_copy(directory, name, instance)
                    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True,
                                            text=True, timeout=120)
                    output = result.stdout + result.stderr
                    self.assertEqual(result.returncode, 0, output)
                    # verify only warns (exit 0) about unknown keys and bad values: any line about
                    # our unit is a mistake.
                    about_us = [line for line in output.splitlines() if "image-worker" in line]
                    self.assertEqual(about_us, [])

    def test_systemd_analyze_security(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed")
        with tempfile.TemporaryDirectory() as directory:
            for name, instance in (("image-worker.service", "image-worker.service"),
                                   ("image-worker@.service", "image-worker@9465.service")):
                with self.subTest(unit=instance):
                    copy = self.verify_copy(directory, name, instance)
                    # --threshold is on a 0..100 scale: 20 = an exposure level of 2.0 ("OK").
                    result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", str(copy)],
                                            capture_output=True, text=True, timeout=120)
                    if "--offline" in result.stderr and "unrecognized" in result.stderr:
                        self.skipTest("this systemd-analyze cannot review unit files offline")
                    self.assertEqual(result.returncode, 0,
                                     "exposure above 2.0:\n" + "\n".join(result.stdout.splitlines()[-3:]) + result.stderr)


class ContainerfileTest(unittest.TestCase):
    def test_multi_stage_build(self):
        stages = containerfile_stages()
        self.assertGreaterEqual(len(stages), 2, "a build stage and a runtime stage")
        build_from, build = stages[0]
        self.assertRegex(build_from, r"(?i)^FROM\s+\S*swift:\S*bookworm\S*\s+AS\s+\S+$")
        build_name = build_from.split()[-1]
        self.assertTrue(any("librabbitmq-dev" in i and "pkg-config" in i for i in build), "build dependencies")
        swift_build = [i for i in build if "swift build" in i]
        self.assertTrue(swift_build)
        for flag in ("-c release", "--product image-worker", "--static-swift-stdlib"):
            self.assertIn(flag, swift_build[0])
        runtime_from, runtime = stages[-1]
        self.assertRegex(runtime_from, r"(?i)^FROM\s+\S*debian:bookworm-slim\b")
        self.assertTrue(any(i.upper().startswith("COPY") and f"--from={build_name}" in i for i in runtime),
                        "the runtime stage must take the binary from the build stage")
        installs = " ".join(i for i in runtime if "apt-get install" in i)
        for package in ("librabbitmq4", "libssl3", "ca-certificates"):  # libssl3: libcrypto for SHA-384/512
            self.assertIn(package, installs)
        self.assertNotIn("librabbitmq-dev", installs)

    def test_final_stage_runs_as_non_root(self):
        _, runtime = containerfile_stages()[-1]
        users = [i.split(None, 1)[1].strip() for i in runtime if i.upper().startswith("USER ")]
        self.assertTrue(users, "no USER in the final stage: the worker would run as root")
        user, _, group = users[-1].partition(":")
        self.assertNotIn(user, ("root", "0"))
        self.assertNotIn(group, ("root", "0"))
        self.assertRegex(user, r"^\d+$", "a numeric uid, so that Kubernetes' runAsNonRoot can check it")

    def test_entrypoint_command_and_port(self):
        _, runtime = containerfile_stages()[-1]

        def exec_form(word):
            lines = [i for i in runtime if i.upper().startswith(word + " ")]
            self.assertTrue(lines, f"no {word}")
            value = json.loads(lines[-1].split(None, 1)[1])
            self.assertIsInstance(value, list, f"{word} must be in exec form (SIGTERM must reach the worker, not a shell)")
            return value

        entrypoint = exec_form("ENTRYPOINT")
        self.assertEqual(Path(entrypoint[0]).name, "image-worker")
        self.assertEqual(exec_form("CMD"), ["serve", "--config-file", CONFIG_PATH])
        exposed = " ".join(i.split(None, 1)[1] for i in runtime if i.upper().startswith("EXPOSE "))
        self.assertIn("9464", exposed.replace("/tcp", "").split())


class BrokerImportTest(unittest.TestCase):
    """Imports definitions.json into a scratch vhost of a real broker and reads back what it made."""

    def ctl(self, *args, check=True):
        result = subprocess.run([self.tool, "ctl", *args], capture_output=True, text=True, timeout=180)
        if check and result.returncode != 0:
            self.fail(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result.stdout

    def listing(self, *args):
        return json.loads(self.ctl("-q", *args, "--formatter", "json") or "[]")

    @staticmethod
    def arguments(value):
        """rabbitmqctl's JSON arguments ([[key, type, value], …]) as a dict."""
        if isinstance(value, dict):
            return value
        return {entry[0]: entry[-1] for entry in value}

    def test_definitions_import_into_a_scratch_vhost(self):
        self.tool = os.environ.get("IMAGE_WORKER_TEST_BROKER_CTL")
        if not self.tool:
            message = ("IMAGE_WORKER_TEST_BROKER_CTL is not set (the path of deploy/lib/rabbitmq.sh, with BROKER_DIR "
                       "naming a running private broker): definitions.json was not imported into a broker")
            if os.environ.get("CI") == "true":
                self.fail(message)
            self.skipTest(message)
        self.assertTrue(os.access(self.tool, os.X_OK), f"{self.tool} is not executable")
        self.assertTrue(os.environ.get("BROKER_DIR"), "BROKER_DIR must name the broker's directory")

        vhost = f"iw-defs-check-{uuid.uuid4().hex[:12]}"
        defs = definitions()
        dlx = "ironic.image_worker.dead_letter"

        def rewrite(node):
            if isinstance(node, dict):
                return {k: (vhost if k == "vhost" else rewrite(v)) for k, v in node.items()}
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        scratch = rewrite(defs)
        scratch["vhosts"] = [{"name": vhost}]
        # Test-only queues, shaped as the worker declares them with rabbit_quorum_queue = true, to
        # see which policy the broker's own regex engine applies to each.
        quorum = {"x-queue-type": "quorum", "x-delivery-limit": 20}
        probes = {
            "ironic.image_worker": (quorum, "image-worker-work-queue"),
            "ironic.image_worker.worker-1.example.org": (quorum, "image-worker-host-queues"),
            "ironic.image_worker_fanout_0123456789abcdef": ({"x-expires": 1800000}, ""),
        }
        for name, (arguments, _) in probes.items():
            scratch["queues"].append({"vhost": vhost, "name": name, "durable": arguments is quorum,
                                      "auto_delete": False, "arguments": arguments})

        self.ctl("add_vhost", vhost)
        try:
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "definitions.json"
                path.write_text(json.dumps(scratch), encoding="utf-8")
                os.chmod(directory, 0o755)
                os.chmod(path, 0o644)
                self.ctl("import_definitions", str(path))

            policies = {p["name"]: p for p in self.listing("list_policies", "-p", vhost)}
            expected = {p["name"]: p for p in defs["policies"]}
            self.assertEqual(set(policies), set(expected))
            for name, policy in expected.items():
                got = policies[name]
                self.assertEqual(got["pattern"], policy["pattern"])
                self.assertEqual(got["apply-to"], policy["apply-to"])
                self.assertEqual(int(got["priority"]), policy["priority"])
                definition = got["definition"]
                if isinstance(definition, str):
                    definition = json.loads(definition)
                self.assertEqual(definition, policy["definition"])

            queues = {q["name"]: q for q in self.listing("list_queues", "-p", vhost, "name", "arguments", "policy", "type")}
            self.assertIn(dlx, queues, "the dead-letter queue was not created")
            self.assertEqual(self.arguments(queues[dlx]["arguments"]), {"x-queue-type": "quorum"})
            self.assertEqual(queues[dlx]["type"], "quorum")
            self.assertEqual(queues[dlx]["policy"] or "", "", "the dead-letter queue must not dead-letter into itself")
            for name, (_, policy) in probes.items():
                with self.subTest(queue=name):
                    self.assertEqual(queues[name]["policy"] or "", policy)

            exchanges = {e["name"]: e for e in self.listing("list_exchanges", "-p", vhost, "name", "type", "durable",
                                                            "auto_delete", "internal", "arguments")}
            self.assertIn(dlx, exchanges)
            exchange = exchanges[dlx]
            self.assertEqual((exchange["type"], exchange["durable"], exchange["auto_delete"], exchange["internal"]),
                             ("fanout", True, False, False))
            bindings = self.listing("list_bindings", "-p", vhost, "source_name", "destination_name", "routing_key")
            self.assertIn({"source_name": dlx, "destination_name": dlx, "routing_key": ""}, bindings)
        finally:
            self.ctl("delete_vhost", vhost, check=False)
            remaining = self.ctl("-q", "list_vhosts", "name", check=False).split()
            self.assertNotIn(vhost, remaining, f"scratch vhost {vhost} was not deleted")


if __name__ == "__main__":
    unittest.main()
