#!/usr/bin/python3
"""The peers image-worker is measured against, each the way operators run it today. Run with
Debian's /usr/bin/python3 (python3-ironic, python3-oslo.messaging, python3-requests).

  peers.py ironic-fetch CONF HREF DEST [SHA256]   Ironic's images.fetch (the conductor's path:
                                                   the image service's download, then the checksum
                                                   check); prints the call's own time
  peers.py ironic-cache-raw CONF HREF DEST SHA256 FORMAT
                                                   the conductor's path to a raw image: its image
                                                   cache's download, checksum, format inspection
                                                   and images.image_to_raw (qemu-img convert), then
                                                   its re-hash of the raw file
  peers.py requests-fetch URL DEST SHA256          plain requests, streamed to a file and hashed
  peers.py ironic-server CONF TRANSPORT_URL TOPIC  an oslo.messaging RPC server whose fetch_image
                                                   does what a conductor does with Ironic's
                                                   services (master image cache, hard link) and
                                                   sends the .end notification

Each one-shot command prints `call_ms=<in-process milliseconds of the download call>`.
"""
import hashlib
import os
import sys
import time


def ironic_config(conf_path):
    from ironic.conf import CONF  # importing registers every Ironic option
    CONF(["--config-file", conf_path], project="ironic", default_config_files=[])
    return CONF


def ironic_fetch(conf_path, href, dest, checksum=None):
    ironic_config(conf_path)
    from ironic.common import context as ironic_context
    from ironic.common import images
    context = ironic_context.get_admin_context()
    started = time.perf_counter()
    if checksum:
        images.fetch(context, href, dest, checksum=checksum, checksum_algo="sha256")
    else:
        images.fetch(context, href, dest)
    print("call_ms=%.3f" % ((time.perf_counter() - started) * 1000))


def ironic_cache_raw(conf_path, href, dest, checksum, disk_format):
    ironic_config(conf_path)
    from ironic.common import context as ironic_context
    from ironic.drivers.modules import deploy_utils
    from ironic.drivers.modules import image_cache
    context = ironic_context.get_admin_context()
    cache = image_cache.ImageCache(os.path.join(os.path.dirname(dest), "master"), 20 << 30, 3600)
    started = time.perf_counter()
    cache.fetch_image(href, dest, ctx=context, force_raw=True, expected_format=disk_format, expected_checksum=checksum,
                      expected_checksum_algo="sha256")
    deploy_utils.compute_image_checksum(dest, "sha256")
    print("call_ms=%.3f" % ((time.perf_counter() - started) * 1000))


def requests_fetch(url, dest, checksum):
    import requests
    started = time.perf_counter()
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as response, open(dest, "wb") as out:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != checksum:
        sys.exit("checksum mismatch")
    print("call_ms=%.3f" % ((time.perf_counter() - started) * 1000))


def ironic_server(conf_path, transport_url, topic):
    """A conductor-like RPC server: fetch_image through Ironic's master image cache."""
    conf = ironic_config(conf_path)
    import oslo_messaging as messaging
    messaging.set_transport_defaults(control_exchange="ironic")  # as Ironic's own services do
    from oslo_messaging._metrics import client as metrics_client
    from ironic.common import context as ironic_context
    from ironic.drivers.modules import image_cache
    conf.register_opts(metrics_client.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.set_override("metrics_thread_stop_timeout", 0, group="oslo_messaging_metrics")
    images_dir = conf.pxe.images_path
    cache = image_cache.ImageCache(conf.pxe.instance_master_path, conf.pxe.image_cache_size * 1024 * 1024,
                                   conf.pxe.image_cache_ttl * 60)
    notification_transport = messaging.get_notification_transport(conf, url=transport_url)
    notifier = messaging.Notifier(notification_transport, publisher_id="ironic-peer.bench", driver="messagingv2",
                                  topics=["ironic_versioned_notifications"])

    class Endpoint:
        target = messaging.Target(version="1.0")

        def fetch_image(self, ctxt, node_uuid, instance_info):
            context = ironic_context.get_admin_context()
            href = instance_info["image_source"]
            node_dir = os.path.join(images_dir, node_uuid)
            os.makedirs(node_dir, exist_ok=True)
            dest = os.path.join(node_dir, "disk")
            checksum = instance_info.get("image_checksum")
            cache.fetch_image(href, dest, ctx=context, force_raw=False, expected_checksum=checksum,
                              expected_checksum_algo="sha256" if checksum else None)
            result = {"node_uuid": node_uuid, "images": {"image": {"path": dest, "size": os.path.getsize(dest)}}}
            notifier.info(ctxt, "baremetal.image.fetch.end", {"ironic_object.data": result})
            return result

    transport = messaging.get_rpc_transport(conf, url=transport_url)
    target = messaging.Target(topic=topic, server="ironic-peer", exchange="ironic")
    server = messaging.get_rpc_server(transport, target, [Endpoint()], executor="threading")
    server.start()
    print("ironic-peer serving", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.wait()


def main():
    command, args = sys.argv[1], sys.argv[2:]
    {"ironic-fetch": ironic_fetch, "ironic-cache-raw": ironic_cache_raw, "requests-fetch": requests_fetch,
     "ironic-server": ironic_server}[command](*args)


if __name__ == "__main__":
    main()
