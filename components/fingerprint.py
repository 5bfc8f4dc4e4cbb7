"""fingerprint: a cheap identity of the raw dump (never cached), so the CACHED ingest re-runs only on new data.

KFP caches a task by its inputs; a scheduled run passes the same ``data_uri`` every time, so without this
step a changed bucket would keep hitting the old ingest. Listing names, sizes and mtimes/ETags is
cheap next to decoding every image. An S3 object contributes its ETag (which changes with its content, so a
same-size replacement is seen); a local file its nanosecond mtime (an edit within the same second is seen).
"""


def fingerprint(data_uri: str, label_map_uri: str, data_version: str) -> str:
    """Hex digest over ``data_version`` and every file under ``data_uri`` (and the label map)."""
    import hashlib
    import os

    from bakeoff import storage
    from bakeoff.errors import BakeoffError

    digest = hashlib.sha256(f"version\t{data_version}\n".encode())
    for uri in (u for u in (data_uri, label_map_uri) if u):
        items = list(storage.list_files(uri)) if storage.is_s3(uri) or os.path.isdir(uri) else []
        for item in items:
            stamp = item.etag if storage.is_s3(item.uri) else os.stat(item.uri).st_mtime_ns
            digest.update(f"{item.relpath}\t{item.size}\t{stamp}\n".encode())
        if items:
            continue
        if storage.is_s3(uri) and storage.exists(uri):  # a single object, e.g. s3://bucket/raw.zip
            bucket, key = storage.split_s3(uri)
            head = storage.s3_client().head_object(Bucket=bucket, Key=key)
            digest.update(f"{uri}\t{head['ContentLength']}\t{head['ETag']}\n".encode())
        elif os.path.isfile(uri):
            stat = os.stat(uri)
            digest.update(f"{os.path.abspath(uri)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        else:
            raise BakeoffError(f"no data at {uri}; pass a folder, an archive or an s3:// prefix with images")
    value = digest.hexdigest()[:16]
    print(f"data fingerprint of {data_uri}: {value}")
    return value
