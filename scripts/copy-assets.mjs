// Copy the non-TypeScript assets tsc does not (Lua scripts) from lib/ into dist/lib/.
import { cpSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.lua')) cpSync(p, join('dist', p));
  }
}
if (existsSync('lib')) walk('lib');
