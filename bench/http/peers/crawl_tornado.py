# tornado crawler (notebook 2): CurlAsyncHTTPClient(max_clients=C) + asyncio.as_completed.
# python3 crawl_tornado.py BASE_URL N C  -> "RESULT bytes seconds bad"
import asyncio, random, string, sys, time
from tornado.httpclient import AsyncHTTPClient

base, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or int(sys.argv[2])
AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient", max_clients=c)


async def run(urls):
    client = AsyncHTTPClient()
    size = bad = 0
    tasks = [client.fetch(url, raise_error=False, request_timeout=60) for url in urls]
    for task in asyncio.as_completed(tasks):
        r = await task
        size += len(r.body or b"")
        bad += r.code != 200
    return size, bad


urls = [base + "".join(random.sample(string.ascii_lowercase, 10)) for _ in range(n)]
start = time.time()
size, bad = asyncio.run(run(urls))
print("RESULT", size, time.time() - start, bad)
