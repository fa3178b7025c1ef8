"""An S3-compatible server for tests: moto in server mode on a free loopback port.

    with moto_s3("bucket") as endpoint:      # http://127.0.0.1:PORT
        FeatureStore("s3://bucket/store")    # s3fs finds it through AWS_ENDPOINT_URL_S3

The endpoint and dummy credentials go into the environment, where botocore (under
s3fs) reads them, and so do processes started meanwhile (writers, Dask workers).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from contextlib import contextmanager

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


def _forget_s3_clients() -> None:
    """fsspec caches filesystem instances, each bound to the endpoint it was made with."""
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()


@contextmanager
def moto_s3(*buckets: str):
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide state: start from none, whatever ran before
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL_S3=endpoint)
    _forget_s3_clients()
    try:
        import s3fs
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        for bucket in buckets:
            fs.mkdir(bucket)
        yield endpoint
    finally:
        _forget_s3_clients()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
