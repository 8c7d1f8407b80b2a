#!/usr/bin/env python3
"""64 MiB PUT two ways, one keep-alive connection each: a resumable
upload through the node in 1 MiB parts (POST /v1/uploads, PUT each part,
POST .../complete; a part is at most limits.max_body_bytes, 1 MiB by
default) next to an S3 multipart upload straight to s3s-fs in 8 MiB parts
(S3 refuses parts under 5 MiB; CreateMultipartUpload, UploadPart,
CompleteMultipartUpload). After a warm-up round of each, prints the
median MB/s of 3 alternating rounds of each and their ratio. Used by
benches/s3.sh.

    s3_put.py NODE_HOST:PORT S3_HOST:PORT BUCKET
"""
import http.client
import json
import os
import re
import statistics
import sys
import time

SIZE = 64 << 20
PART = 1 << 20
S3_PART = 8 << 20
ROUNDS = 3


def call(conn, method, path, body=b"", want=(200, 201)):
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status not in want:
        sys.exit(f"{method} {path}: {resp.status} {data[:300]!r}")
    return resp, data


def through_node(host, data):
    conn = http.client.HTTPConnection(host)
    start = time.perf_counter()
    _, body = call(conn, "POST", "/v1/uploads")
    upload = json.loads(body)["id"]
    for n in range(len(data) // PART):
        call(conn, "PUT", f"/v1/uploads/{upload}/{n}", data[n * PART:(n + 1) * PART])
    call(conn, "POST", f"/v1/uploads/{upload}/complete")
    return time.perf_counter() - start


def straight_to_s3(host, bucket, data):
    conn = http.client.HTTPConnection(host)
    key = f"/{bucket}/direct/big"
    start = time.perf_counter()
    _, body = call(conn, "POST", f"{key}?uploads")
    upload = re.search(rb"<UploadId>([^<]+)</UploadId>", body).group(1).decode()
    etags = []
    for n in range(len(data) // S3_PART):
        resp, _ = call(conn, "PUT", f"{key}?partNumber={n + 1}&uploadId={upload}",
                       data[n * S3_PART:(n + 1) * S3_PART])
        etags.append(resp.getheader("ETag"))
    parts = "".join(f"<Part><PartNumber>{i + 1}</PartNumber><ETag>{e}</ETag></Part>"
                    for i, e in enumerate(etags))
    call(conn, "POST", f"{key}?uploadId={upload}",
         f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode())
    return time.perf_counter() - start


def main():
    node, s3, bucket = sys.argv[1:4]
    data = os.urandom(SIZE)
    # One round each to warm connections and allocators, then the median
    # of ROUNDS alternating rounds.
    through_node(node, data)
    straight_to_s3(s3, bucket, data)
    node_times, s3_times = [], []
    for _ in range(ROUNDS):
        node_times.append(through_node(node, data))
        s3_times.append(straight_to_s3(s3, bucket, data))
    t_node = statistics.median(node_times)
    t_s3 = statistics.median(s3_times)
    mb = SIZE / 1e6
    print(f"put64MiB resumable-upload  {mb / t_node:8.1f} MB/s  ({t_node:.2f} s)")
    print(f"put64MiB s3-multipart      {mb / t_s3:8.1f} MB/s  ({t_s3:.2f} s)")
    print(f"put64MiB ratio             {t_s3 / t_node:.2f}x  (macronode/s3s-fs throughput)")


if __name__ == "__main__":
    main()
