// The metric server on node's http module (same semantics as server_tornado.py).
// node server_node.js PORT
const http = require("http");
const metric = {};
const server = http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  const name = u.searchParams.get("name");
  const raw = u.searchParams.get("delay") ?? "1024";
  if (!/^\s*[-+]?\d+\s*$/.test(raw)) { res.writeHead(400); res.end("Invalid value for delay"); return; }
  const start = Date.now() / 1000;
  setTimeout(() => {
    res.end(".");
    const end = Date.now() / 1000;
    (metric[name] = metric[name] || []).push({ start, end, dt: end - start });
  }, parseInt(raw, 10));
});
server.keepAliveTimeout = 30000;
server.listen(+process.argv[2], "127.0.0.1", () => console.log("Listening on port: " + process.argv[2]));
