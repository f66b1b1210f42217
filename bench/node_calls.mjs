// Times sequential cached chat calls through the official Node SDK, one to each base URL in turn (so drift on
// a shared machine hits every target alike), after warm-up calls, and prints one JSON object: per base URL, the
// per-call figures behind the playbook's 1,000-call total. Run by bench/node.py:
//   OPENAI_API_KEY=… node bench/node_calls.mjs CALLS BASE_URL…
import OpenAI from "openai";

const [calls, ...bases] = [Number(process.argv[2]), ...process.argv.slice(3)];
const warmup = 300;
const request = { model: "gpt-4o", messages: [{ role: "user", content: "Return the string OK." }], temperature: 0 };
const clients = bases.map((baseURL) => new OpenAI({ apiKey: process.env.OPENAI_API_KEY, baseURL }));
const times = bases.map(() => []);

for (let i = 0; i < warmup; i++) for (const client of clients) await client.chat.completions.create(request);
for (let i = 0; i < calls; i++) {
  for (const [k, client] of clients.entries()) {
    const started = performance.now();
    await client.chat.completions.create(request);
    times[k].push(performance.now() - started);
  }
}

const figures = (ms) => {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  return { mean, p50: at(0.5), p90: at(0.9), p99: at(0.99), over_2ms: ms.filter((v) => v > 2).length };
};
console.log(JSON.stringify(Object.fromEntries(bases.map((base, k) => [base, figures(times[k])]))));
