"""Not an entry script: a process that fills the model cache for a job spec once a barrier file exists.

``python cache_filler.py JOB_YAML READY_FILE BARRIER_FILE`` writes READY_FILE, waits for BARRIER_FILE
(so that several fillers start their downloads together), fetches the spec's remote models through
the cache, and prints {name: [local path, the file's content]} and the log lines as JSON.
"""

import json
import os
import sys
import time

from batchinfer.modelcache import ModelCache, resolve
from batchinfer.spec import load_spec

spec = load_spec(sys.argv[1])
remotes = resolve(spec)
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
with ModelCache().fetch(spec, remotes) as local:
    print(json.dumps({"paths": {n: [p, open(p).read() if os.path.isfile(p) else sorted(os.listdir(p))]
                                for n, p in local.models.items()}, "notes": local.notes}))
