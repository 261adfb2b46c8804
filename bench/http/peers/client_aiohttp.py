# Client throughput: N keep-alive GETs, C at a time, one aiohttp session.
# python3 client_aiohttp.py URL N C [--uvloop]  -> "RESULT requests seconds bad"
import asyncio, sys, time
import aiohttp

url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if "--uvloop" in sys.argv:
    import uvloop
    uvloop.install()


async def run():
    bad = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
        async def worker(k):
            nonlocal bad
            for _ in range(k):
                async with session.get(url) as r:
                    await r.read()
                    bad += r.status != 200
        await asyncio.gather(*(worker(n // c + (1 if i < n % c else 0)) for i in range(c)))
    return bad


start = time.time()
bad = asyncio.run(run())
print("RESULT", n, time.time() - start, bad)
