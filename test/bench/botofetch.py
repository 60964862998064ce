"""A long-lived boto3 process for scripts/bench's many-process phase.

    python3 botofetch.py EVERY_SECONDS UNTIL_UNIX_MS MAX_CALLS

Like an application, it makes a boto3 Session, takes its credentials
(session.get_credentials(), which botocore's default chain resolves to the
container provider from AWS_CONTAINER_CREDENTIALS_FULL_URI and
AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]), then every EVERY_SECONDS asks them
for a usable key with get_frozen_credentials(), which is what botocore does
before signing each request, until the wall-clock deadline UNTIL_UNIX_MS (a
deadline rather than a duration: importing boto3 takes a second or more, and
longer when many processes start at once, yet every process of the phase
should stop at the same time). botocore alone decides whether that call goes to
the endpoint: it refreshes container credentials once fewer than 15 minutes
(advisory) / 10 minutes (mandatory) of their life remain, so with keys that
live a minute every call fetches.

To see what botocore actually sends, and nothing else, it wraps the one
method that performs a container-credentials HTTP request
(ContainerMetadataFetcher._get_response; botocore's own retries call it once
per attempt) and prints one line per request, in the format of
test/bench/fetch:

    <unix-ms> <status> <access key id or -> <latency-µs>

status is 0 when no HTTP answer came. The summary goes to stderr:

    botofetch: botocore=V calls=N requests=M failed=F new_connections=C

new_connections counts the TCP connections urllib3 opened (botocore keeps
one alive between fetches). Exit status 1 if any request failed or a call
raised, 2 on bad usage or when the credentials do not come from the
container provider. The secret key is never printed.
"""
import logging
import re
import sys
import time

import boto3
import botocore
import botocore.utils

_STATUS = re.compile(r"non 200 response \(?(\d{3})")


class _Counter(logging.Handler):
    """Counts the new connections urllib3 reports at DEBUG."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.connections = 0

    def emit(self, record):
        if record.getMessage().startswith("Starting new HTTP"):
            self.connections += 1


def main():
    if len(sys.argv) != 4:
        print("usage: botofetch.py EVERY_SECONDS UNTIL_UNIX_MS MAX_CALLS", file=sys.stderr)
        sys.exit(2)
    every, until_ms, max_calls = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    conns = _Counter()
    pool_log = logging.getLogger("urllib3.connectionpool")
    pool_log.addHandler(conns)
    pool_log.setLevel(logging.DEBUG)
    pool_log.propagate = False

    stats = {"requests": 0, "failed": 0}
    original = botocore.utils.ContainerMetadataFetcher._get_response

    def observed(self, full_url, headers, timeout):
        start = time.time()
        status, key = 0, "-"
        try:
            reply = original(self, full_url, headers, timeout)
            status, key = 200, reply.get("AccessKeyId") or "-"
            return reply
        except Exception as e:  # botocore retries or raises; we only record
            m = _STATUS.search(str(e))
            status = int(m.group(1)) if m else 0
            raise
        finally:
            stats["requests"] += 1
            if status != 200:
                stats["failed"] += 1
            print("%d %d %s %d" % (start * 1000, status, key, (time.time() - start) * 1e6), flush=True)

    botocore.utils.ContainerMetadataFetcher._get_response = observed

    calls = errors = 0
    end = time.monotonic() + (until_ms / 1000 - time.time())
    try:
        creds = boto3.session.Session().get_credentials()
    except Exception as e:  # the first fetch failed, after botocore's retries
        print("botofetch: get_credentials: %s; botocore=%s requests=%d failed=%d"
              % (type(e).__name__, botocore.__version__, stats["requests"], stats["failed"]), file=sys.stderr)
        sys.exit(1)
    if creds is None or getattr(creds, "method", "") != "container-role":
        print("botofetch: credentials did not come from the container provider (%s)"
              % getattr(creds, "method", None), file=sys.stderr)
        sys.exit(2)
    while calls < max_calls and time.monotonic() < end:
        started = time.monotonic()
        calls += 1
        try:
            creds.get_frozen_credentials()
        except Exception as e:  # a mandatory refresh that failed: the application would see it
            errors += 1
            print("botofetch: get_frozen_credentials: %s" % type(e).__name__, file=sys.stderr)
        time.sleep(max(0.0, min(started + every, end) - time.monotonic()))

    print("botofetch: botocore=%s calls=%d requests=%d failed=%d new_connections=%d"
          % (botocore.__version__, calls, stats["requests"], stats["failed"], conns.connections), file=sys.stderr)
    sys.exit(1 if stats["failed"] or errors else 0)


if __name__ == "__main__":
    main()
