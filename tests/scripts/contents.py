"""Returns each file's content (stripped), never its name: for inputs whose names are odd."""


def run(mini_batch):
    rows = []
    for path in mini_batch:
        with open(path) as f:
            rows.append(f.read().strip())
    return rows
