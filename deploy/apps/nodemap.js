#!/usr/bin/env node
// A tenant whose every request touches much of its memory: a Map of ENTRIES objects (200,000 by
// default) built at start, walked whole by each request.
//
// Used by `pico bench restore` (app node-map): after a lazy restore, the first request faults in
// most of the heap, the opposite of a tenant whose requests touch a few pages. GET / answers
// "COUNT WEIGHTS LABELS": the entries walked, the sum of their `weight` (i % 1000) and the sum of
// their label lengths ("entry-" + i), so a client can check that the whole Map came back.
// Plain node, no packages: `node nodemap.js PORT [ENTRIES]`.
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 8000);
const entries = Number(process.argv[3] || 200000);

const map = new Map();
for (let i = 0; i < entries; i++) {
  map.set('k' + i, { id: i, weight: i % 1000, label: 'entry-' + i });
}

function walk() {
  let count = 0;
  let weights = 0;
  let labels = 0;
  for (const v of map.values()) {
    count += 1;
    weights += v.weight;
    labels += v.label.length;
  }
  return `${count} ${weights} ${labels}`;
}

http
  .createServer((req, res) => {
    const body = req.url === '/' || req.url.startsWith('/walk') ? walk() : 'ok';
    res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  })
  .listen(port, '127.0.0.1');
