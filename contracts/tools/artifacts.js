#!/usr/bin/env node
// Writes the ABI + creation bytecode the Python side deploys with web3.py, from forge's out/.
//
//   node tools/artifacts.js            write ../src/shardnet/chain/artifacts/<Name>.json
//   node tools/artifacts.js --check    regenerate into a temp dir and fail if the committed
//                                      files differ (run after `forge build`)
//
// Each file is {"contractName", "abi", "bytecode"} in that key order, 2-space indent,
// trailing newline, so a rebuild that changes nothing changes no byte.
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const CONTRACTS = ["WorkerRegistry", "JobEscrow"];
const ROOT = path.resolve(__dirname, "..");
const OUT = path.join(ROOT, "out");
const DEST = path.resolve(ROOT, "..", "src", "shardnet", "chain", "artifacts");

function render(name) {
  const file = path.join(OUT, `${name}.sol`, `${name}.json`);
  if (!fs.existsSync(file)) {
    throw new Error(`${path.relative(ROOT, file)} not found: run \`npm run build\` first`);
  }
  const built = JSON.parse(fs.readFileSync(file, "utf8"));
  const bytecode = built.bytecode && built.bytecode.object;
  if (!bytecode || !/^0x[0-9a-f]+$/.test(bytecode)) {
    throw new Error(`${name}: no creation bytecode in ${path.relative(ROOT, file)}`);
  }
  const artifact = { contractName: name, abi: built.abi, bytecode };
  return JSON.stringify(artifact, null, 2) + "\n";
}

function writeAll(dir) {
  fs.mkdirSync(dir, { recursive: true });
  for (const name of CONTRACTS) {
    fs.writeFileSync(path.join(dir, `${name}.json`), render(name));
  }
}

function check() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "shardnet-artifacts-"));
  try {
    writeAll(tmp);
    const stale = [];
    for (const name of CONTRACTS) {
      const committed = path.join(DEST, `${name}.json`);
      const fresh = fs.readFileSync(path.join(tmp, `${name}.json`), "utf8");
      if (!fs.existsSync(committed) || fs.readFileSync(committed, "utf8") !== fresh) {
        stale.push(path.relative(process.cwd(), committed));
      }
    }
    if (stale.length) {
      console.error(`artifacts out of date: ${stale.join(", ")}\nrun \`npm --prefix contracts run artifacts\` and commit the result`);
      process.exit(1);
    }
    console.log(`artifacts up to date (${CONTRACTS.join(", ")})`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  if (process.argv.includes("--check")) {
    check();
  } else {
    writeAll(DEST);
    console.log(`wrote ${CONTRACTS.map((n) => path.relative(process.cwd(), path.join(DEST, n + ".json"))).join(", ")}`);
  }
} catch (err) {
  console.error(`artifacts: ${err.message}`);
  process.exit(1);
}
