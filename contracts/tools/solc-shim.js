#!/usr/bin/env node
// Native-solc stand-in for forge, backed by the pinned npm `solc` (solcjs/wasm) package.
// Forge cannot download a native compiler here, so `forge build --use tools/solc-shim.js`
// (or `solc = "tools/solc-shim.js"` in foundry.toml) runs this instead. It supports the
// two calls forge makes: `--version` and `--standard-json` (input on stdin, output on stdout).
// Every source is sent inline by forge, so no import callback is needed; a missing import
// is reported by the compiler as a normal error.
"use strict";

const args = process.argv.slice(2);

function loadSolc() {
  // Loaded lazily: the wasm module takes ~1 s to initialise.
  return require("solc");
}

if (args.includes("--version") || args.includes("-v")) {
  const solc = loadSolc();
  process.stdout.write(
    "solc, the solidity compiler commandline interface\nVersion: " + solc.version() + "\n",
  );
  process.exit(0);
}

if (args.includes("--standard-json")) {
  const chunks = [];
  process.stdin.on("data", (c) => chunks.push(c));
  process.stdin.on("end", () => {
    const solc = loadSolc();
    const input = Buffer.concat(chunks).toString("utf8");
    const output = solc.compile(input);
    process.stdout.write(output);
    process.stdout.write("\n");
  });
  return;
}

process.stderr.write(
  "solc-shim: only --version and --standard-json are supported (got: " + args.join(" ") + ")\n",
);
process.exit(2);
