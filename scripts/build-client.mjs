// Bundle the client SDK (lib/client) with esbuild: an ES module for bundlers and
// modern browsers, and a script-tag build (global `Streamgate`, ES2017) for older ones.
// Types come from the tsc build (dist/lib/client/*.d.ts).
//   node scripts/build-client.mjs [--outdir dist/client]
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const at = process.argv.indexOf('--outdir');
const outdir = at !== -1 && process.argv[at + 1] ? resolve(process.argv[at + 1]) : join(root, 'dist', 'client');
const entry = join(root, 'lib', 'client', 'index.ts');
const common = { entryPoints: [entry], bundle: true, platform: 'browser', sourcemap: true, legalComments: 'none', logLevel: 'warning' };

await Promise.all([
  build({ ...common, format: 'esm', target: 'es2020', outfile: join(outdir, 'streamgate.mjs') }),
  build({ ...common, format: 'iife', globalName: 'Streamgate', target: 'es2017', minify: true, outfile: join(outdir, 'streamgate.js') }),
]);
console.log(`client bundles written to ${outdir}`);
