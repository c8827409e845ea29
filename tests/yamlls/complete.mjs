// Asks the real yaml-language-server (over stdio, as an editor does) which keys it
// completes at a position of a runbook, with the schema named in the file's
// `# yaml-language-server: $schema=...` comment. Usage:
//   node complete.mjs FILE LINE COLUMN     (0-based, as LSP counts)
// Prints the completion labels, one per line; exits 1 on a protocol error or timeout.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { resolve, dirname } from 'node:path';

const [file, line, character] = process.argv.slice(2);
const path = resolve(file);
const uri = pathToFileURL(path).href;
const text = readFileSync(path, 'utf8');
const here = dirname(new URL(import.meta.url).pathname);
const server = spawn(process.execPath, [`${here}/node_modules/yaml-language-server/bin/yaml-language-server`, '--stdio'], {
  stdio: ['pipe', 'pipe', 'inherit'],
});

let buffer = Buffer.alloc(0);
const waiting = new Map();
let nextId = 1;
server.stdout.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const end = buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const length = Number(/Content-Length: (\d+)/i.exec(buffer.slice(0, end).toString())[1]);
    if (buffer.length < end + 4 + length) return;
    const message = JSON.parse(buffer.slice(end + 4, end + 4 + length).toString());
    buffer = buffer.slice(end + 4 + length);
    if (message.id !== undefined && waiting.has(message.id)) {
      waiting.get(message.id)(message);
      waiting.delete(message.id);
    } else if (message.method === 'workspace/configuration') {
      // Settings the server asks for: validation and completion on, nothing else.
      send({ jsonrpc: '2.0', id: message.id, result: message.params.items.map(() => ({ validate: true, completion: true, hover: true, schemaStore: { enable: false } })) });
    } else if (message.id !== undefined && message.method) {
      send({ jsonrpc: '2.0', id: message.id, result: null });
    }
  }
});

function send(message) {
  const body = JSON.stringify(message);
  server.stdin.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
function request(method, params) {
  const id = nextId++;
  send({ jsonrpc: '2.0', id, method, params });
  return new Promise((ok) => waiting.set(id, ok));
}
function notify(method, params) {
  send({ jsonrpc: '2.0', method, params });
}

const timer = setTimeout(() => {
  console.error('yaml-language-server did not answer within 60 s');
  process.exit(1);
}, 60000);

await request('initialize', {
  processId: process.pid,
  rootUri: pathToFileURL(dirname(path)).href,
  capabilities: { textDocument: { completion: { completionItem: { snippetSupport: false } } }, workspace: { configuration: true } },
});
notify('initialized', {});
notify('workspace/didChangeConfiguration', { settings: { yaml: { validate: true, completion: true, schemaStore: { enable: false } } } });
notify('textDocument/didOpen', { textDocument: { uri, languageId: 'yaml', version: 1, text } });
const answer = await request('textDocument/completion', {
  textDocument: { uri },
  position: { line: Number(line), character: Number(character) },
});
clearTimeout(timer);
if (answer.error) {
  console.error(JSON.stringify(answer.error));
  process.exit(1);
}
const items = Array.isArray(answer.result) ? answer.result : (answer.result?.items ?? []);
for (const item of items) console.log(item.label);
server.kill();
process.exit(0);
