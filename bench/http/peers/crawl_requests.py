# Serial crawler (notebook 2): requests.get one after another.
# python3 crawl_requests.py BASE_URL N  -> "RESULT bytes seconds bad"
import random, string, sys, time
import requests

base, n = sys.argv[1], int(sys.argv[2])
urls = [base + "".join(random.sample(string.ascii_lowercase, 10)) for _ in range(n)]
start = time.time()
size = bad = 0
for url in urls:
    r = requests.get(url)
    size += len(r.text)
    bad += r.status_code != 200
print("RESULT", size, time.time() - start, bad)
