# gevent crawler (notebook 2): Semaphore(C) + spawn all + iwait, urllib with monkey-patching.
# python3 crawl_gevent.py BASE_URL N C  -> "RESULT bytes seconds bad"
from gevent import monkey
monkey.patch_socket()
import random, string, sys, time, urllib.request
from contextlib import closing
import gevent
from gevent.lock import Semaphore

base, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or int(sys.argv[2])
bad = 0


def download(url, semaphore):
    global bad
    with semaphore:
        with closing(urllib.request.urlopen(url)) as data:
            bad += data.status != 200
            return data.read()


urls = [base + "".join(random.sample(string.ascii_lowercase, 10)) for _ in range(n)]
start = time.time()
semaphore = Semaphore(c)
requests = [gevent.spawn(download, u, semaphore) for u in urls]
size = sum(len(r.value) for r in gevent.iwait(requests))
print("RESULT", size, time.time() - start, bad)
