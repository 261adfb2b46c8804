// bench/tasks/peers/node_tasks.js — the Node side of bench/tasks:
// `node --expose-gc node_tasks.js [--timeout0] CASE N [M]`, same cases and output as
// bench/tasks/aio_tasks.lua. A task is an async function; sleep(0) is a promise resolved by
// setImmediate (or setTimeout(0) with --timeout0, which Node clamps to 1 ms).
// Times: process CPU (process.cpuUsage: every thread, V8's helpers included) and wall.
'use strict';
const fs = require('fs');

function statusKb(key) {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(key + ':\\s*(\\d+)'));
  return Number(m[1]);
}

let args = process.argv.slice(2);
let timeout0 = false;
if (args[0] === '--timeout0') { timeout0 = true; args = args.slice(1); }
const [kase, n, m] = [args[0], Number(args[1]), Number(args[2] || 0)];

const sleep0 = timeout0
  ? () => new Promise((resolve) => setTimeout(resolve, 0))
  : () => new Promise((resolve) => setImmediate(resolve));
const work = async (i) => { await sleep0(); return i; };
const sleeper = async () => { await new Promise((resolve) => setTimeout(resolve, 3600e3)); };
const switcher = async (count) => { for (let k = 0; k < count; k++) await sleep0(); };

function cpuSeconds(c0) { const d = process.cpuUsage(c0); return (d.user + d.system) / 1e6; }

async function main() {
  if (kase === 'spawn') {
    const c0 = process.cpuUsage(), w0 = performance.now();
    const ts = [];
    for (let i = 1; i <= n; i++) ts.push(work(i));
    const r = await Promise.all(ts);
    const cpu = cpuSeconds(c0), wall = (performance.now() - w0) / 1000;
    if (r[n - 1] !== n || r.length !== n) throw new Error('bad results');
    console.log(`cpu=${cpu.toFixed(6)} wall=${wall.toFixed(6)}`);
  } else if (kase === 'sleepers') {
    if (global.gc) global.gc();
    const before = statusKb('VmRSS');
    const ts = [];
    for (let i = 0; i < n; i++) ts.push(sleeper());
    await new Promise((resolve) => setTimeout(resolve, 1));
    process.stdout.write(`rss0_kb=${before} hwm_kb=${statusKb('VmHWM')} rss_kb=${statusKb('VmRSS')}\n`,
      () => process.exit(0));
  } else if (kase === 'switch') {
    const c0 = process.cpuUsage(), w0 = performance.now();
    const ts = [];
    for (let i = 0; i < n; i++) ts.push(switcher(m));
    await Promise.all(ts);
    const cpu = cpuSeconds(c0), wall = (performance.now() - w0) / 1000;
    console.log(`cpu=${cpu.toFixed(6)} wall=${wall.toFixed(6)} switches=${n * m}`);
  } else {
    throw new Error('usage: node_tasks.js [--timeout0] spawn|sleepers|switch N [M]');
  }
}
main();
