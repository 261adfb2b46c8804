// bench/workers/peers/node_workers.js — Node's side: node node_workers.js CASE [N]
//   sumsq_serial | sumsq_workers (worker_threads, one per CPU). Node's numbers are doubles:
//   the sums are rounded (not wrapped), the timing is what is compared.
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const os = require('os');

function cpuBound(number) {
  let s = 0;
  for (let i = 0; i < number; i++) s += i * i;
  return s;
}

if (!isMainThread) {
  for (const n of workerData) cpuBound(n);
  parentPort.postMessage('done');
} else {
  const kase = process.argv[2];
  const base = Number(process.argv[3] || 5000000);
  const numbers = Array.from({ length: 20 }, (_, x) => base + x);
  const t0 = process.hrtime.bigint();
  const done = () => {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`seconds=${s.toFixed(4)}`);
  };
  if (kase === 'sumsq_serial') {
    for (const n of numbers) cpuBound(n);
    done();
  } else if (kase === 'sumsq_workers') {
    const k = os.cpus().length;
    const parts = Array.from({ length: k }, (_, i) => numbers.filter((_, j) => j % k === i));
    let left = k;
    for (const part of parts) {
      const w = new Worker(__filename, { workerData: part });
      w.on('message', () => { if (--left === 0) done(); });
    }
  } else {
    console.error('unknown case ' + kase);
    process.exit(2);
  }
}
