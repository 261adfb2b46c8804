# aiohttp crawler (notebook 2): one ClientSession + Semaphore(C) + asyncio.as_completed.
# python3 crawl_aiohttp.py BASE_URL N C [--uvloop]  -> "RESULT bytes seconds bad"
import asyncio, random, string, sys, time
import aiohttp

base, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or int(sys.argv[2])
if "--uvloop" in sys.argv:
    import uvloop
    uvloop.install()


async def run(urls):
    semaphore = asyncio.Semaphore(c)
    size = bad = 0
    connector = aiohttp.TCPConnector(limit=c)

    async def http_get(url, session):
        nonlocal bad
        async with semaphore:
            async with session.request("GET", url) as response:
                bad += response.status != 200
                return await response.content.read()

    async with aiohttp.ClientSession(connector=connector) as session:
        for fut in asyncio.as_completed([http_get(u, session) for u in urls]):
            size += len(await fut)
    return size, bad


urls = [base + "".join(random.sample(string.ascii_lowercase, 10)) for _ in range(n)]
start = time.time()
size, bad = asyncio.run(run(urls))
print("RESULT", size, time.time() - start, bad)
