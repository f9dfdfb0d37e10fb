// Compile OpenZeppelin's ERC-20 (npm @openzeppelin/contracts) with solc-js (npm solc): a token
// fedmarket did not write, for tests/test_foreign_token.py. Prints {"abi", "bytecode"} JSON.
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const modules = process.argv[2];
const source = `// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
import "@openzeppelin/contracts/token/ERC20/ERC20.sol";
contract Stable is ERC20 {
    constructor(uint256 supply) ERC20("Stable", "STB") { _mint(msg.sender, supply); }
}`;
const input = {
  language: "Solidity",
  sources: { "Stable.sol": { content: source } },
  settings: {
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
function findImports(name) {
  try {
    return { contents: fs.readFileSync(path.join(modules, name), "utf8") };
  } catch (e) {
    return { error: `not found: ${name}` };
  }
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
for (const e of out.errors || []) {
  if (e.severity === "error") {
    console.error(e.formattedMessage);
    process.exit(1);
  }
}
const c = out.contracts["Stable.sol"]["Stable"];
process.stdout.write(JSON.stringify({ abi: c.abi, bytecode: "0x" + c.evm.bytecode.object }));
