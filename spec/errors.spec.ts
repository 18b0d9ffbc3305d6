import { expect } from 'chai';
import { CloseCode, ERROR_CODES, HTTP_STATUS } from '../lib/protocol/codes.js';
import { StreamgateError, toStreamgateError } from '../lib/errors.js';

describe('error catalogue', () => {
  it('gives every protocol error code its PROTOCOL §7 status, and no two codes one status', () => {
    expect(Object.keys(HTTP_STATUS).sort()).to.deep.equal([...ERROR_CODES].sort());
    expect(HTTP_STATUS).to.deep.equal({
      bad_request: 400, unauthorized: 401, forbidden: 403, not_found: 404, conflict: 409,
      too_large: 413, rate_limited: 429, internal: 500, unavailable: 503,
    });
    expect(new Set(Object.values(HTTP_STATUS)).size).to.equal(ERROR_CODES.length);
  });

  it('has the close codes of PROTOCOL §4', () => {
    expect(Object.values(CloseCode).sort()).to.deep.equal([1001, 1009, 4001, 4003, 4008, 4009, 4010, 4029]);
  });

  it('turns anything unknown into internal, keeping the cause', () => {
    const cause = new Error('boom');
    const e = toStreamgateError(cause);
    expect(e.code).to.equal('internal');
    expect(e.status).to.equal(500);
    expect(e.cause).to.equal(cause);
    expect(e.toBody()).to.deep.equal({ error: { code: 'internal', message: 'internal error' } });
    const known = new StreamgateError('forbidden', 'no');
    expect(toStreamgateError(known)).to.equal(known);
  });
});
