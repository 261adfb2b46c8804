# The metric server on aiohttp.web (same semantics as server_tornado.py).
# python3 server_aiohttp.py PORT [--uvloop]
import asyncio
import sys
import time
from collections import defaultdict

from aiohttp import web

metric_data = defaultdict(list)


async def add(request):
    q = request.query
    name = q.get("name")
    try:
        delay = int(q.get("delay", 1024))
    except ValueError:
        raise web.HTTPBadRequest(reason="Invalid value for delay")
    start = time.time()
    await asyncio.sleep(delay / 1000.0)
    end = time.time()
    metric_data[name].append({"start": start, "end": end, "dt": end - start})
    return web.Response(text=".")


if __name__ == "__main__":
    port = int(sys.argv[1])
    if "--uvloop" in sys.argv:
        import uvloop
        uvloop.install()
    app = web.Application()
    app.router.add_get("/add", add)
    print("Listening on port: {}".format(port), flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
