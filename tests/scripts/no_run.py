"""A script that forgot run()."""


def init():
    pass
