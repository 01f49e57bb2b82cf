"""Helpers for the interop suites: a running image-worker, a real oslo.messaging conductor and
notification listener, raw publishing with pika, and the test broker's control script.

Run with Debian's /usr/bin/python3 (the only one that imports oslo.messaging). deploy/test.sh sets
IMAGE_WORKER_BIN, IMAGE_WORKER_TEST_AMQP_URL and IMAGE_WORKER_TEST_BROKER_CTL; without them the
suites skip, except under CI=true where they fail.
"""
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

from oslo_config import cfg
import oslo_messaging as messaging

WORKER_BIN = os.environ.get("IMAGE_WORKER_BIN")
AMQP_URL = os.environ.get("IMAGE_WORKER_TEST_AMQP_URL")
BROKER_CTL = os.environ.get("IMAGE_WORKER_TEST_BROKER_CTL")
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TLS_DIR = os.environ.get("IMAGE_WORKER_TEST_TLS_DIR")
HTTP_URL = os.environ.get("IMAGE_WORKER_TEST_HTTP_URL")
HTTPS_URL = os.environ.get("IMAGE_WORKER_TEST_HTTPS_URL")
HTTP_ROOT = os.environ.get("IMAGE_WORKER_TEST_HTTP_ROOT")
GLANCE_URL = os.environ.get("IMAGE_WORKER_TEST_GLANCE_URL")
NGINX_ACCESS_LOG = os.environ.get("IMAGE_WORKER_TEST_NGINX_ACCESS_LOG")

# The contract's default egress policy (§5.1) refuses loopback, where every test server listens:
# test workers allow it unless a suite says otherwise (the egress suite tests the default).
CONTRACT_DISALLOWED_NETWORKS = ("127.0.0.0/8, ::1/128, 169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128, 224.0.0.0/4, ff00::/8, "
                                "fd00:ec2::254/128")
LOOPBACK_ALLOWED = "169.254.0.0/16, fe80::/10, 0.0.0.0/8, ::/128, 224.0.0.0/4, ff00::/8, fd00:ec2::254/128"


def nginx_requests(method, path, status=None):
    """How many `method path` requests nginx logged (with `status`, if given)."""
    with open(NGINX_ACCESS_LOG) as log:
        return sum(1 for line in log
                   if line.split()[:2] == [method, path] and (status is None or line.split()[2] == str(status)))

def forget_pid(pid):
    """The process ended: its pid may be reused, so it is no longer recorded."""
    directory = os.environ.get("IMAGE_WORKER_PID_DIR")
    if directory:
        try:
            os.remove(os.path.join(directory, "%d.pid" % pid))
        except FileNotFoundError:
            pass


def record_pid(pid):
    """Records a started process in IMAGE_WORKER_PID_DIR, so that deploy/test.sh stops it on exit
    even if a test could not (it stops processes by recorded pid, never by command line)."""
    directory = os.environ.get("IMAGE_WORKER_PID_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "%d.pid" % pid), "w") as out:
            out.write(str(pid))


TOPIC = "ironic.image_worker"
EXCHANGE = "ironic"
NOTIFICATION_TOPIC = "ironic_versioned_notifications"


def require_environment():
    """Skips (or, under CI, fails) when the servers deploy/test.sh starts are not there."""
    missing = [name for name, value in (("IMAGE_WORKER_BIN", WORKER_BIN),
                                        ("IMAGE_WORKER_TEST_AMQP_URL", AMQP_URL),
                                        ("IMAGE_WORKER_TEST_BROKER_CTL", BROKER_CTL)) if not value]
    if not missing:
        return
    message = "interop suite needs %s (deploy/test.sh sets them)" % ", ".join(missing)
    if CI:
        raise AssertionError(message + "; under CI a missing server is a failure")
    raise unittest.SkipTest(message)


def require_image_servers():
    """nginx and glance-api, as deploy/test.sh starts them (skip, or fail under CI)."""
    missing = [name for name, value in (("IMAGE_WORKER_TEST_HTTP_URL", HTTP_URL), ("IMAGE_WORKER_TEST_HTTPS_URL", HTTPS_URL),
                                        ("IMAGE_WORKER_TEST_HTTP_ROOT", HTTP_ROOT), ("IMAGE_WORKER_TEST_GLANCE_URL", GLANCE_URL)) if not value]
    if not missing:
        return
    message = "needs %s (deploy/test.sh starts nginx and glance-api)" % ", ".join(missing)
    if CI:
        raise AssertionError(message)
    raise unittest.SkipTest(message)


def publish_http(path, data):
    """Puts bytes under nginx's document root."""
    target = os.path.join(HTTP_ROOT, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        out.write(data)


def glance_image(data, properties=None, visibility="public"):
    """Creates an active Glance image (the test Glance has no Keystone); returns its id."""
    import urllib.request
    body = dict(name="interop-%s" % uuid.uuid4().hex[:6], disk_format="raw", container_format="bare", visibility=visibility)
    body.update(properties or {})
    request = urllib.request.Request(GLANCE_URL + "/v2/images", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    image_id = json.load(urllib.request.urlopen(request))["id"]
    upload = urllib.request.Request("%s/v2/images/%s/file" % (GLANCE_URL, image_id), data=data, method="PUT",
                                    headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(upload).read()
    return image_id


def broker_ctl(*args):
    return subprocess.run([BROKER_CTL, *args], check=True, capture_output=True, text=True).stdout


def new_vhost(prefix):
    """A fresh virtual host, so suites with different queue flags never collide."""
    name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    broker_ctl("add-vhost", name)
    return name


def url_for(vhost, **options):
    base = AMQP_URL.rstrip("/") + "/" + urllib.parse.quote(vhost, safe="")
    if options:
        base += "?" + urllib.parse.urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()})
    return base


def oslo_conf():
    conf = cfg.ConfigOpts()
    conf([], project="image-worker-interop")
    # oslo.messaging 14 waits 10 s for its metrics thread on exit unless told otherwise.
    from oslo_messaging._metrics import client as metrics_client
    conf.register_opts(metrics_client.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.set_override("metrics_thread_stop_timeout", 0, group="oslo_messaging_metrics")
    return conf


def remote_class_name(error):
    """The server-side class of an exception an oslo client raised."""
    if isinstance(error, messaging.RemoteError):
        return error.exc_type
    name = type(error).__name__
    return name[:-len("_Remote")] if name.endswith("_Remote") else name


class Worker:
    """An image-worker process with its own config file, images folder and log."""

    def __init__(self, vhost, allowed_paths, host=None, extra=None, url_options=None, state_dir=None):
        """`state_dir`, when given, is shared with other workers (images, cache and journal), as
        processes of one host share them; the worker's own files (config, log) stay apart."""
        self.directory = tempfile.mkdtemp(prefix="iw-interop-")
        self.state_dir = state_dir or self.directory
        self.images_dir = os.path.join(self.state_dir, "images")
        self.host = host or "worker-%s" % uuid.uuid4().hex[:6]
        self.log_path = os.path.join(self.directory, "worker.log")
        self.config_path = os.path.join(self.directory, "image-worker.conf")
        defaults = {"transport_url": url_for(vhost, **(url_options or {})), "host": self.host}
        if TLS_DIR:
            defaults["webserver_verify_ca"] = os.path.join(TLS_DIR, "ca.pem")
        sections = {
            "DEFAULT": defaults,
            "conductor": {"file_url_allowed_paths": ",".join(allowed_paths)},
            "image_worker": {"state_dir": self.state_dir, "images_dir": self.images_dir, "progress_interval": "1", "log_level": "debug",
                             "disallowed_networks": LOOPBACK_ALLOWED},
        }
        if GLANCE_URL:
            sections["glance"] = {"endpoint_override": GLANCE_URL, "project_id": "project-worker"}
        for section, options in (extra or {}).items():
            sections.setdefault(section, {}).update(options)
        with open(self.config_path, "w") as config:
            for section, options in sections.items():
                config.write("[%s]\n" % section)
                for name, value in options.items():
                    config.write("%s = %s\n" % (name, value))
        self.process = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([WORKER_BIN, "serve", "--config-file", self.config_path],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        record_pid(self.process.pid)
        if wait:
            self.wait_for_log("consuming requests", timeout=60)
        return self

    def log_text(self):
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def wait_for_log(self, text, timeout=30, after=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log_text()[after:]:
                return
            if self.process.poll() is not None:
                raise AssertionError("worker exited with %s:\n%s" % (self.process.returncode, self.log_text()[-4000:]))
            time.sleep(0.1)
        raise AssertionError("worker did not log %r within %ss:\n%s" % (text, timeout, self.log_text()[-4000:]))

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            forget_pid(self.process.pid)
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("worker did not exit within %ss of SIGTERM" % timeout)
        finally:
            self.log.close()
            if self.process.poll() is not None:
                forget_pid(self.process.pid)
        return status

    def kill(self):
        """SIGKILL, as a crash or the OOM killer would; returns the exit status."""
        self.process.kill()
        status = self.process.wait()
        self.log.close()
        forget_pid(self.process.pid)
        return status

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Conductor:
    """A real oslo.messaging RPC client, as an Ironic conductor would be."""

    def __init__(self, vhost, url_options=None):
        self.conf = oslo_conf()
        self.transport = messaging.get_rpc_transport(self.conf, url=url_for(vhost, **(url_options or {})),
                                                     allowed_remote_exmods=["ironic.common.exception"])
        target = messaging.Target(exchange=EXCHANGE, topic=TOPIC, version="1.0")
        self.client = messaging.get_rpc_client(self.transport, target)

    def context(self, **extra):
        context = {"request_id": "req-%s" % uuid.uuid4(), "auth_token": "SECRET-TOKEN-%s" % uuid.uuid4().hex[:6],
                   "project_id": "p1", "roles": ["admin"]}
        context.update(extra)
        return context

    def call(self, method, timeout=30, server=None, call_monitor_timeout=None, context=None, **kwargs):
        client = self.client.prepare(timeout=timeout, server=server, call_monitor_timeout=call_monitor_timeout)
        return client.call(context if context is not None else self.context(), method, **kwargs)

    def cast(self, method, server=None, context=None, **kwargs):
        client = self.client.prepare(server=server)
        client.cast(context if context is not None else self.context(), method, **kwargs)

    def close(self):
        self.transport.cleanup()


class EventListener:
    """A real oslo notification listener on the worker's notification topic."""

    def __init__(self, vhost, url_options=None):
        self.events = queue.Queue()
        self.seen = []
        self.conf = oslo_conf()
        self.transport = messaging.get_notification_transport(self.conf, url=url_for(vhost, **(url_options or {})))
        listener = self

        class Endpoint:
            def info(self, ctxt, publisher_id, event_type, payload, metadata):
                listener.events.put({"priority": "INFO", "publisher_id": publisher_id, "event_type": event_type,
                                     "payload": payload, "context": ctxt, "metadata": metadata})

            def error(self, ctxt, publisher_id, event_type, payload, metadata):
                listener.events.put({"priority": "ERROR", "publisher_id": publisher_id, "event_type": event_type,
                                     "payload": payload, "context": ctxt, "metadata": metadata})

        targets = [messaging.Target(topic=NOTIFICATION_TOPIC, exchange=EXCHANGE)]
        self.listener = messaging.get_notification_listener(self.transport, targets, [Endpoint()], executor="threading")
        self.listener.start()

    def wait_for(self, predicate, timeout=30, description="event"):
        """The first event (seen earlier or arriving within `timeout`) that matches."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                event = self.events.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                break
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError("no %s within %ss; saw %s" % (description, timeout,
                                                             [e["event_type"] for e in self.seen][-20:]))

    def all_matching(self, predicate, settle=1.0):
        """Every event matching, after waiting `settle` seconds for stragglers."""
        deadline = time.time() + settle
        while time.time() < deadline:
            try:
                self.seen.append(self.events.get(timeout=0.05))
            except queue.Empty:
                pass
        return [event for event in self.seen if predicate(event)]

    def stop(self):
        self.listener.stop()
        self.listener.wait()
        self.transport.cleanup()


class WorkerSuite(unittest.TestCase):
    """A suite around one worker in its own vhost, with a conductor and a notification listener.
    Files under `cls.sources` may be fetched with file://. The worker must exit 0 on SIGTERM."""

    vhost_prefix = "suite"
    # More options for the suite's worker: {section: {name: value}}.
    worker_extra = None

    @classmethod
    def setUpClass(cls):
        require_environment()
        cls.vhost = new_vhost(cls.vhost_prefix)
        cls.sources = tempfile.mkdtemp(prefix="iw-%s-" % cls.vhost_prefix)
        cls.worker = Worker(cls.vhost, allowed_paths=[cls.sources], extra=cls.worker_extra)
        try:
            cls.worker.start()
            cls.conductor = Conductor(cls.vhost)
            cls.events = EventListener(cls.vhost)
        except BaseException:
            cls.worker.cleanup()
            shutil.rmtree(cls.sources, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.events.stop()
        cls.conductor.close()
        status = cls.worker.stop()
        cls.worker.cleanup()
        shutil.rmtree(cls.sources, ignore_errors=True)
        assert status == 0, "worker exited with %s on SIGTERM" % status


def data_of(event):
    return event["payload"]["ironic_object.data"]


def for_node(node, event_type):
    return lambda event: event["event_type"] == event_type and data_of(event).get("node_uuid") == node


def pika_connection(vhost):
    """A blocking pika connection to the test broker's `vhost`."""
    import pika
    parsed = urllib.parse.urlparse(AMQP_URL)
    parameters = pika.ConnectionParameters(host=parsed.hostname, port=parsed.port, virtual_host=vhost,
                                           credentials=pika.PlainCredentials(parsed.username, parsed.password))
    return pika.BlockingConnection(parameters)


def raw_publish(vhost, body, content_type="application/json", routing_key=TOPIC):
    """Publishes bytes as they are (pika), for messages no oslo client would send."""
    raw_publish_many(vhost, [(body, content_type)], routing_key=routing_key)


def raw_publish_many(vhost, messages, routing_key=TOPIC):
    """Publishes (body, content type) pairs on one connection, with publisher confirms."""
    import pika
    connection = pika_connection(vhost)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body, content_type in messages:
            channel.basic_publish(exchange=EXCHANGE, routing_key=routing_key, body=body,
                                  properties=pika.BasicProperties(content_type=content_type, delivery_mode=2))
    finally:
        connection.close()


class ReplyQueue:
    """A reply queue read with pika, for calls sent as raw bytes."""

    def __init__(self, vhost):
        self.connection = pika_connection(vhost)
        self.channel = self.connection.channel()
        self.name = "reply_%s" % uuid.uuid4().hex
        self.channel.queue_declare(self.name, arguments={"x-expires": 1800000})

    def get(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            method, properties, body = self.channel.basic_get(self.name, auto_ack=True)
            if method:
                outer = json.loads(body)
                return json.loads(outer["oslo.message"]) if "oslo.message" in outer else outer
            self.connection.sleep(0.1)
        raise AssertionError("no reply on %s within %ss" % (self.name, timeout))

    def close(self):
        self.connection.close()


def free_port():
    """A TCP port nobody listens on now."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url, timeout=5):
    """(status, body text) of a GET; (None, reason) when nothing answers."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return None, str(error)


def wait_for_http(url, timeout=30):
    """Waits until something answers `url` (any status); fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        status, text = http_get(url)
        if status is not None:
            return status
        if time.time() > deadline:
            raise AssertionError("nothing answered %s within %ss: %s" % (url, timeout, text))
        time.sleep(0.1)


def scrape(port):
    """The worker's /metrics as {'name{labels}': value}."""
    status, text = http_get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200, "GET /metrics: %s %s" % (status, text)
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def queue_depths(vhost):
    """{queue: (ready, unacknowledged)} in a vhost."""
    out = broker_ctl("ctl", "list_queues", "-q", "-p", vhost, "name", "messages_ready", "messages_unacknowledged")
    depths = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            depths[parts[0]] = (int(parts[1]), int(parts[2]))
    return depths


def envelope(message):
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()
