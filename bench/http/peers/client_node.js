// Client throughput: N keep-alive GETs, C at a time, one http.Agent.
// node client_node.js URL N C  -> "RESULT requests seconds bad"
const http = require("http");
const [url, n, c] = [process.argv[2], +process.argv[3], +process.argv[4]];
const agent = new http.Agent({ keepAlive: true, maxSockets: c });
let bad = 0;
function get() {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      if (res.statusCode !== 200) bad++;
      res.on("data", () => {});
      res.on("end", resolve);
    }).on("error", reject);
  });
}
async function worker(k) { for (let i = 0; i < k; i++) await get(); }
const start = process.hrtime.bigint();
Promise.all(Array.from({ length: c }, (_, i) => worker(Math.floor(n / c) + (i < n % c ? 1 : 0)))).then(() => {
  console.log("RESULT", n, Number(process.hrtime.bigint() - start) / 1e9, bad);
  agent.destroy();
});
