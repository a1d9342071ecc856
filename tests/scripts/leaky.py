"""Each input file holds a URL with credentials; run() fails naming it, as a download error would."""


def run(mini_batch):
    for path in mini_batch:
        url = open(path).read().strip()
        if url.startswith("ok"):
            continue
        raise OSError(f"cannot fetch {url}: 403 Forbidden")
    return [open(p).read().strip() for p in mini_batch]
