"""boto3 client of the end-to-end suite (scripts/e2e), for any boto3 version.

Credentials come only from botocore's default chain, so the environment
decides between the container endpoint, IMDS and credential_process.

    python3 s3client.py version
    python3 s3client.py roundtrip BUCKET KEY FILE   list, upload, download, compare byte for byte
    python3 s3client.py loop BUCKET SECONDS         one long-lived client: small put+get every second,
                                                    prints each access key id it signs with; exit 1 on any failure
                                                    (object keys E2E_LOOP_PREFIX/<i>, default py-loop)

The endpoint comes from E2E_ENDPOINT (botocore before 1.31 ignores
AWS_ENDPOINT_URL_S3); addressing is path-style.
"""
import hashlib
import os
import sys
import time

import boto3
import botocore
from botocore.config import Config


def client():
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get("E2E_ENDPOINT") or None,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def key_id(c):
    return c._request_signer._credentials.get_frozen_credentials().access_key


def roundtrip(bucket, key, path):
    c = client()
    data = open(path, "rb").read()
    c.list_objects_v2(Bucket=bucket)
    c.put_object(Bucket=bucket, Key=key, Body=data)
    got = c.get_object(Bucket=bucket, Key=key)["Body"].read()
    if got != data:
        sys.exit("downloaded %d bytes (sha256 %s), uploaded %d (sha256 %s)" % (
            len(got), hashlib.sha256(got).hexdigest(), len(data), hashlib.sha256(data).hexdigest()))
    print("ok key=%s bytes=%d" % (key_id(c), len(data)))


def loop(bucket, seconds):
    c = client()
    prefix = os.environ.get("E2E_LOOP_PREFIX") or "py-loop"
    deadline = time.time() + seconds
    calls = failures = 0
    keys = []
    i = 0
    while time.time() < deadline:
        k = "%s/%d" % (prefix, i)
        body = b"x" * 1024 + str(i).encode()
        calls += 2
        try:
            c.put_object(Bucket=bucket, Key=k, Body=body)
            used = key_id(c)  # the key the put was signed with
            if c.get_object(Bucket=bucket, Key=k)["Body"].read() != body:
                raise RuntimeError("get returned other bytes")
            if not keys or keys[-1] != used:
                keys.append(used)
                print("%s key %s" % (time.strftime("%H:%M:%S", time.gmtime()), used), flush=True)
        except Exception as e:  # count every failed call, keep going
            failures += 1
            print("%s call FAILED: %s" % (time.strftime("%H:%M:%S", time.gmtime()), e), flush=True)
        i += 1
        time.sleep(1)
    print("calls=%d failures=%d keys=%d %s" % (calls, failures, len(keys), ",".join(keys)))
    sys.exit(1 if failures else 0)


def main():
    a = sys.argv[1:]
    if a == ["version"]:
        print("boto3 %s, botocore %s, Python %s" % (boto3.__version__, botocore.__version__, sys.version.split()[0]))
    elif len(a) == 4 and a[0] == "roundtrip":
        roundtrip(a[1], a[2], a[3])
    elif len(a) == 3 and a[0] == "loop":
        loop(a[1], int(a[2]))
    else:
        sys.exit("usage: s3client.py version|roundtrip BUCKET KEY FILE|loop BUCKET SECONDS")


if __name__ == "__main__":
    main()
