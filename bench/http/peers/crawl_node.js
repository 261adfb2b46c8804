// node crawler: http.Agent({keepAlive, maxSockets: C}) + Promise.all.
// node crawl_node.js BASE_URL N C  -> "RESULT bytes seconds bad"
const http = require("http");
const [base, n, c0] = [process.argv[2], +process.argv[3], +process.argv[4]];
const c = c0 || n;
const agent = new http.Agent({ keepAlive: true, maxSockets: c });
const letters = "abcdefghijklmnopqrstuvwxyz";
function sample10() {
  const a = letters.split("");
  for (let i = 0; i < 10; i++) { const j = i + Math.floor(Math.random() * (26 - i)); [a[i], a[j]] = [a[j], a[i]]; }
  return a.slice(0, 10).join("");
}
let bad = 0;
function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      let size = 0;
      if (res.statusCode !== 200) bad++;
      res.on("data", (d) => (size += d.length));
      res.on("end", () => resolve(size));
    }).on("error", reject);
  });
}
const urls = Array.from({ length: n }, () => base + sample10());
const start = process.hrtime.bigint();
Promise.all(urls.map(get)).then((sizes) => {
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log("RESULT", sizes.reduce((a, b) => a + b, 0), secs, bad);
  agent.destroy();
});
