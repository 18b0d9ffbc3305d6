/**
 * The demo page (`GET /demo` in development): the SDK's script-tag bundle, loaded from
 * `<page>/streamgate.js`, showing the connection state and transport, a channel feed
 * and a publish form. Query: `token`, `channel` (default `demo:lobby`), `transports`
 * (`websocket,sse,poll`), `url` (default: the gateway that serves the page),
 * `connect_timeout_ms`, `backoff_ms`. Tests read `window.streamgateDemo`.
 */
export const DEMO_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Streamgate demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  .bar { display: flex; gap: .75rem; align-items: center; flex-wrap: wrap; margin: .5rem 0; }
  .badge { padding: .15rem .6rem; border-radius: 1rem; background: #ddd; font-weight: 600; }
  .badge[data-state=connected] { background: #c8f0c8; }
  .badge[data-state=reconnecting], .badge[data-state=connecting] { background: #fde8b0; }
  .badge[data-state=disconnected] { background: #f6c4c4; }
  input, textarea, button { font: inherit; }
  input[type=text], textarea { padding: .3rem; border: 1px solid #bbb; border-radius: 4px; }
  textarea { width: 100%; min-height: 4rem; font-family: ui-monospace, monospace; }
  #feed { list-style: none; padding: 0; border-top: 1px solid #ddd; max-height: 24rem; overflow: auto; }
  #feed li { padding: .35rem 0; border-bottom: 1px solid #eee; font-family: ui-monospace, monospace; font-size: 13px; white-space: pre-wrap; }
  #feed li.notice { color: #8a5a00; }
  .hint { color: #666; font-size: 13px; }
  code { background: #f3f3f3; padding: 0 .25rem; }
</style>
</head>
<body>
<h1>Streamgate demo</h1>
<div id="need-token" hidden>
  <p>Paste a user token (from <code>streamgate token --sub me --tid demo --channels 'demo:*' --publish 'demo:*'</code>), or add <code>?token=…</code> to the URL.</p>
  <div class="bar"><input id="token-input" type="text" size="60" placeholder="eyJhbGciOi…"><button id="token-go">Connect</button></div>
</div>
<div id="app" hidden>
  <div class="bar">State: <span id="state" class="badge" data-state="connecting">connecting</span>
    Transport: <span id="transport" class="badge">–</span> <span id="detail" class="hint"></span></div>
  <form id="sub-form" class="bar">
    <label>Channel <input id="channel" type="text" size="24"></label>
    <button type="submit">Subscribe</button>
  </form>
  <form id="pub-form">
    <div class="bar"><label>Event <input id="event" type="text" size="20" value="message.sent"></label>
      <button id="publish" type="submit">Publish</button> <span id="pub-result" class="hint"></span></div>
    <textarea id="data">{"text": "hello"}</textarea>
  </form>
  <h2 style="font-size:1.1rem">Feed: <span id="feed-channel"></span></h2>
  <ul id="feed"></ul>
</div>
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var base = location.pathname.replace(/\\/demo\\/?$/, '');
  var demo = (window.streamgateDemo = { client: null, events: [], states: [], resets: [], errors: [], ready: false });
  var $ = function (id) { return document.getElementById(id); };
  function line(text, cls) {
    var li = document.createElement('li');
    li.textContent = text;
    if (cls) li.className = cls;
    $('feed').insertBefore(li, $('feed').firstChild);
  }
  function start(token) {
    $('need-token').hidden = true;
    $('app').hidden = false;
    var options = { url: params.get('url') || location.origin + base, token: token };
    if (params.get('transports')) options.transports = params.get('transports').split(',');
    var timeouts = {};
    if (params.get('connect_timeout_ms')) timeouts.connectMs = Number(params.get('connect_timeout_ms'));
    options.timeouts = timeouts;
    if (params.get('backoff_ms')) options.backoff = { baseMs: Number(params.get('backoff_ms')) };
    var client = (demo.client = Streamgate.connect(options));
    client.on('state', function (s) {
      demo.states.push(s);
      $('state').textContent = s.state;
      $('state').setAttribute('data-state', s.state);
      $('transport').textContent = s.transport || '–';
      $('detail').textContent = s.state === 'reconnecting' ? 'next attempt in ' + (s.delay / 1000).toFixed(1) + ' s' + (s.reason ? ' (' + s.reason + ')' : '') : '';
    });
    client.on('error', function (e) { demo.errors.push(String(e && e.message)); line('error: ' + (e && e.message), 'notice'); });
    var current = null;
    function subscribe(channel) {
      if (current) current.unsubscribe();
      $('feed').textContent = '';
      $('feed-channel').textContent = channel;
      current = client.subscribe(channel, function (e) {
        demo.events.push(e);
        line(e.id + '  ' + e.event + '  ' + JSON.stringify(e.data) + (e.publisher ? '  by ' + e.publisher.id : ''));
      }, {
        onReset: function (r) { demo.resets.push(r.channel); line('events were lost on ' + r.channel + ': reload its state', 'notice'); },
        onError: function (err) { line('subscribe refused: ' + err.message, 'notice'); }
      });
      current.ready.then(function () { demo.ready = true; }, function () {});
    }
    $('channel').value = params.get('channel') || 'demo:lobby';
    subscribe($('channel').value);
    $('sub-form').onsubmit = function (ev) { ev.preventDefault(); subscribe($('channel').value.trim()); };
    $('pub-form').onsubmit = function (ev) {
      ev.preventDefault();
      var data;
      try { data = JSON.parse($('data').value || 'null'); } catch (err) { $('pub-result').textContent = 'data is not JSON'; return; }
      client.publish($('channel').value.trim(), $('event').value.trim(), data).then(
        function (r) { $('pub-result').textContent = 'published ' + r.id; },
        function (err) { $('pub-result').textContent = 'refused: ' + err.message; });
    };
  }
  var script = document.createElement('script');
  script.src = base + '/demo/streamgate.js';
  script.onload = function () {
    var token = params.get('token');
    if (token) return start(token);
    $('need-token').hidden = false;
    $('token-go').onclick = function () { if ($('token-input').value.trim()) start($('token-input').value.trim()); };
  };
  script.onerror = function () { document.body.textContent = 'Could not load ' + script.src + ' (run npm run build).'; };
  document.head.appendChild(script);
})();
</script>
</body>
</html>
`;
