// Reads a JSON list of {name, text} diagrams on stdin and parses each with mermaid's
// own parser. Prints one line per diagram that does not parse; exits 1 if any.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

// mermaid sanitises labels with DOMPurify, which needs a DOM.
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
const { default: mermaid } = await import('mermaid');

const diagrams = JSON.parse(readFileSync(0, 'utf8'));
let failed = 0;
for (const { name, text } of diagrams) {
  try {
    const result = await mermaid.parse(text);
    if (!result || result.diagramType !== 'flowchart-v2') {
      throw new Error(`parsed as ${result && result.diagramType}, not a flowchart`);
    }
  } catch (err) {
    failed += 1;
    console.log(`${name}: ${String(err.message ?? err).replace(/\n/g, ' | ')}`);
  }
}
console.log(`${diagrams.length - failed} of ${diagrams.length} diagrams parse`);
process.exit(failed ? 1 : 0);
