/* buurtalert ops page: coverage map, live feed with reach, delivery per channel.
 * No inline script (strict CSP), no external library, no tile server: the map is an SVG of the
 * registry's own area outlines (see ops-geo.js). Data comes from /v1/ops/* with an admin key,
 * kept in sessionStorage (this tab only). Ids, area names and counts only. */
(function () {
  'use strict';

  var geo = window.buurtOpsGeo;
  var KEY_STORE = 'buurtalert.ops.key';
  var FEED_EVERY_MS = 3000;
  var DELIVERY_EVERY_MS = 5000;
  var NL_BBOX = [3.2, 50.7, 7.3, 53.6];
  var SVG_NS = 'http://www.w3.org/2000/svg';

  var TOPICS = {
    fire: 'Brand', violence: 'Geweld', missing_person: 'Vermissing', burglary: 'Inbraak',
    theft: 'Diefstal', vandalism: 'Vernieling', vehicle: 'Voertuig',
    suspicious_person: 'Verdachte persoon', animal: 'Dier', noise: 'Geluidsoverlast',
    unknown: 'Overig'
  };
  var CATEGORIES = {
    missing_person: 'Vermiste persoon', burglary: 'Inbraak',
    suspicious_situation: 'Verdachte situatie', fire: 'Brand', other: 'Overig'
  };
  var MSG_TYPES = { Alert: '', Update: 'Update', Cancel: 'Ingetrokken', Ack: 'Bevestiging', Error: 'Fout' };
  var STATUSES = { Actual: '', Exercise: 'Oefening', Test: 'Test', System: 'Systeem', Draft: 'Concept' };
  var CHANNELS = {
    sms: 'SMS', whatsapp: 'WhatsApp', telegram: 'Telegram', email: 'E-mail',
    outbox: 'Outbox (lokaal)', web: 'web', dispatch: 'meldkamer'
  };
  var OUTCOMES = {
    delivered: 'afgeleverd', failed_permanent: 'geweigerd', failed_transient: 'opgegeven',
    undelivered: 'niet aangekomen', unconfirmed: 'onbevestigd', capped: 'boven limiet',
    opted_out: 'afgemeld', no_recipients: 'geen ontvangers', held: 'vastgehouden',
    merged: 'samengevoegd'
  };

  var el = function (id) { return document.getElementById(id); };
  var svg = el('kaart-svg');
  var layers = {
    cells: el('laag-cellen'), areas: el('laag-gebieden'), groups: el('laag-groepen'),
    notices: el('laag-berichten'), markers: el('laag-markers')
  };

  var state = {
    key: null,
    k: null,              // projection scale, fixed at the first map answer
    view: null,           // SVG viewBox [x, y, w, h]
    mapVersion: null,
    fitted: false,
    feedTimer: null,
    deliveryTimer: null,
    mapTimer: null,
    mapLoading: null,
    items: [],
    selected: null,
    lastOk: null
  };

  function show(node, on) { node.hidden = !on; }
  function setText(node, value) { node.textContent = value; }
  function svgEl(name, attrs) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (a) { node.setAttribute(a, attrs[a]); });
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function fmtNumber(n) { return Number(n).toLocaleString('nl-NL'); }
  function fmtTime(iso) {
    var d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString('nl-NL', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  function plural(n, one, many) { return fmtNumber(n) + ' ' + (n === 1 ? one : many); }

  // --- the key -----------------------------------------------------------------------------

  function storedKey() {
    try { return window.sessionStorage.getItem(KEY_STORE); } catch (e) { return null; }
  }
  function storeKey(key) {
    try {
      if (key) { window.sessionStorage.setItem(KEY_STORE, key); } else { window.sessionStorage.removeItem(KEY_STORE); }
    } catch (e) { /* storage off: the key lives in this page only */ }
  }

  // A link may carry the key once in its fragment (#sleutel=...): fragments never reach a
  // server; it is moved to sessionStorage and removed from the address bar at once.
  function keyFromFragment() {
    var m = /(?:^#|&)sleutel=([^&]+)/.exec(window.location.hash || '');
    if (!m) { return null; }
    window.history.replaceState(null, '', window.location.pathname + window.location.search);
    try { return decodeURIComponent(m[1]); } catch (e) { return null; }
  }

  function askForKey(message) {
    stopPolling();
    state.key = null;
    storeKey(null);
    show(el('ops'), false);
    show(el('sleutel-wissen'), false);
    show(el('sleutel-scherm'), true);
    setText(el('sleutel-fout'), message || '');
    show(el('sleutel-fout'), Boolean(message));
    setText(el('status'), 'Niet verbonden');
    el('status').className = 'status';
    el('sleutel').focus();
  }

  function open(key) {
    state.key = key;
    storeKey(key);
    show(el('sleutel-scherm'), false);
    show(el('ops'), true);
    show(el('sleutel-wissen'), true);
    el('sleutel').value = '';
    setText(el('status'), 'Verbinden…');
    loadMap(null);
    pollFeed();
    pollDelivery();
  }

  el('sleutel-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var key = el('sleutel').value.trim();
    if (!key) { askForKey('Vul een sleutel in.'); return; }
    open(key);
  });
  el('sleutel-wissen').addEventListener('click', function () { askForKey(''); });

  function stopPolling() {
    window.clearTimeout(state.feedTimer);
    window.clearTimeout(state.deliveryTimer);
    window.clearTimeout(state.mapTimer);
    if (state.mapLoading) { state.mapLoading.abort(); state.mapLoading = null; }
  }

  // --- fetching ----------------------------------------------------------------------------

  function AuthError(status) { this.status = status; }

  function getJSON(path, signal) {
    if (!state.key) { return Promise.reject(new AuthError(401)); }
    return fetch(path, {
      headers: { Authorization: 'Bearer ' + state.key, Accept: 'application/json' },
      cache: 'no-store',
      signal: signal
    }).then(function (resp) {
      if (resp.status === 401 || resp.status === 403) { throw new AuthError(resp.status); }
      if (!resp.ok) { throw new Error('status ' + resp.status); }
      return resp.json();
    });
  }

  function failed(err) {
    if (err instanceof AuthError) {
      askForKey(err.status === 403
        ? 'Deze sleutel is geen beheersleutel (admin key): geen toegang.'
        : 'Onbekende sleutel: controleer hem en probeer opnieuw.');
      return true;
    }
    if (err && err.name === 'AbortError') { return true; }
    setText(el('status'), 'Verbinding onderbroken; opnieuw proberen…');
    el('status').className = 'status storing';
    return false;
  }

  function markLive(data) {
    state.lastOk = new Date();
    setText(el('status'), (data && data.live === false ? 'Verbonden' : 'Live') + ' · bijgewerkt ' +
      state.lastOk.toLocaleTimeString('nl-NL'));
    el('status').className = 'status live';
  }

  // --- the map -----------------------------------------------------------------------------

  function size() {
    var r = svg.getBoundingClientRect();
    return [Math.max(r.width, 1), Math.max(r.height, 1)];
  }

  function setView(view) {
    state.view = view;
    svg.setAttribute('viewBox', view.map(function (v) { return v.toFixed(7); }).join(' '));
    rescaleMarkers();
  }

  function unitsPerPixel() { return state.view ? state.view[2] / size()[0] : 1; }

  function fitTo(bbox, pad) {
    var s = size();
    setView(geo.fitView(bbox, s[0], s[1], state.k, pad));
  }

  function atLeast(b, span) {
    var cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2;
    var hw = Math.max((b[2] - b[0]) / 2, span / 2), hh = Math.max((b[3] - b[1]) / 2, span / 3);
    return [cx - hw, cy - hh, cx + hw, cy + hh];
  }

  function scheduleMap() {
    window.clearTimeout(state.mapTimer);
    state.mapTimer = window.setTimeout(function () { loadMap(currentBBox(0.2)); }, 250);
  }

  function currentBBox(pad) {
    var b = geo.viewBBox(state.view, state.k);
    var dx = (b[2] - b[0]) * pad, dy = (b[3] - b[1]) * pad;
    var clamp = function (v, lo, hi) { return Math.min(hi, Math.max(lo, v)); };
    return [clamp(b[0] - dx, -180, 180), clamp(b[1] - dy, -90, 90),
      clamp(b[2] + dx, -180, 180), clamp(b[3] + dy, -90, 90)];
  }

  function loadMap(bbox) {
    if (state.mapLoading) { state.mapLoading.abort(); }
    var ctrl = new AbortController();
    state.mapLoading = ctrl;
    var q = bbox ? '?bbox=' + encodeURIComponent(bbox.map(function (v) { return v.toFixed(5); }).join(',')) : '';
    getJSON('/v1/ops/map' + q, ctrl.signal).then(function (data) {
      if (state.mapLoading === ctrl) { state.mapLoading = null; }
      state.mapVersion = data.version;
      if (state.k === null) {
        var ext = data.covered_extent || data.areas_extent || NL_BBOX;
        state.k = geo.scaleFor((ext[1] + ext[3]) / 2);
      }
      if (!state.fitted) {
        state.fitted = true;
        // The groups' buurten with some of their surroundings (at least a few km).
        fitTo(atLeast(data.covered_extent || data.areas_extent || NL_BBOX, 0.05), 0.2);
        drawMap(data);
        loadMap(currentBBox(0.2));  // the answer for exactly this view
        return;
      }
      drawMap(data);
    }).catch(function (err) {
      if (state.mapLoading === ctrl) { state.mapLoading = null; }
      if (!failed(err)) { state.mapTimer = window.setTimeout(scheduleMap, 3000); }
    });
  }

  function coverageSummary(data) {
    var parts = [fmtNumber(data.areas_covered) + ' van ' + fmtNumber(data.areas_total) + ' buurten gedekt'];
    if (data.areas_partly_covered) { parts.push(fmtNumber(data.areas_partly_covered) + ' deels'); }
    parts.push(plural(data.groups_total, 'groep', 'groepen'));
    return parts.join(' · ');
  }

  function drawMap(data) {
    setText(el('dekking-samenvatting'), coverageSummary(data));
    clear(layers.cells); clear(layers.areas); clear(layers.groups);
    var notitie = el('kaart-notitie');
    if (!data.areas_total) {
      setText(notitie, 'Er zijn nog geen buurtgrenzen geladen (buurtalert areas import).');
      show(notitie, true);
    } else if (data.mode === 'grid') {
      drawGrid(data.grid);
      setText(notitie, 'Zoom in om de buurtgrenzen te zien (' + fmtNumber(data.areas_in_view) +
        ' buurten in beeld; per vak het deel met een groep).');
      show(notitie, true);
    } else {
      show(notitie, false);
    }
    (data.features || []).forEach(function (f) {
      var d = geo.geometryPath(f.geometry, state.k);
      if (!d) { return; }
      var p = f.properties || {};
      if (p.kind === 'group') {
        var g = svgEl('path', { d: d, 'class': 'groepsgebied', 'vector-effect': 'non-scaling-stroke', 'data-id': p.id });
        g.appendChild(titled('Groep ' + p.name));
        layers.groups.appendChild(g);
        return;
      }
      var cls = p.coverage === 'full' ? 'gedekt' : p.coverage === 'partial' ? 'deels' : 'niet';
      var path = svgEl('path', {
        d: d, 'class': 'gebied ' + cls, 'fill-rule': 'evenodd',
        'vector-effect': 'non-scaling-stroke', 'data-id': p.id,
        'data-covered': p.covered ? 'ja' : 'nee'
      });
      var groups = p.groups || [];
      path.appendChild(titled(p.name + ' (' + p.id + '): ' +
        (groups.length ? plural(groups.length, 'groep', 'groepen') + ' – ' + groups.join(', ') : 'geen groep')));
      layers.areas.appendChild(path);
    });
    if (state.items.length) { drawMarkers(state.items); }
  }

  function titled(text) {
    var t = svgEl('title');
    t.textContent = text;  // names come from imported files: text, never markup
    return t;
  }

  function drawGrid(grid) {
    if (!grid) { return; }
    var dx = grid.step[0], dy = grid.step[1];
    grid.cells.forEach(function (c) {
      var share = (c[3] + c[4] * 0.5) / c[2];
      var a = geo.project(c[0] * dx, (c[1] + 1) * dy, state.k);
      var rect = svgEl('rect', {
        x: a[0], y: a[1], width: dx * state.k, height: dy,
        'class': 'cel ' + (share >= 0.999 ? 'gedekt' : share > 0 ? 'deels' : 'niet'),
        'fill-opacity': (0.25 + 0.75 * share).toFixed(2),
        'vector-effect': 'non-scaling-stroke'
      });
      rect.appendChild(titled(fmtNumber(c[3]) + ' van ' + plural(c[2], 'buurt', 'buurten') + ' gedekt'));
      layers.cells.appendChild(rect);
    });
  }

  function rescaleMarkers() {
    var u = unitsPerPixel();
    Array.prototype.forEach.call(layers.markers.querySelectorAll('circle'), function (c) {
      c.setAttribute('r', (Number(c.getAttribute('data-px')) * u).toFixed(7));
    });
  }

  function drawMarkers(items) {
    clear(layers.markers); clear(layers.notices);
    items.slice().reverse().forEach(function (item) {
      if (item.type === 'notice' && item.outline) {
        var o = svgEl('path', {
          d: geo.geometryPath(item.outline, state.k), 'class': 'berichtgebied',
          'vector-effect': 'non-scaling-stroke', 'data-id': item.id
        });
        layers.notices.appendChild(o);
      }
      if (!item.point) { return; }
      var p = geo.project(item.point[0], item.point[1], state.k);
      var px = item.type === 'notice' ? 7 : Math.min(14, 5 + 2 * Math.sqrt(item.reports || 1));
      var c = svgEl('circle', {
        cx: p[0], cy: p[1], r: 1, 'data-px': px, 'data-id': item.id,
        'class': 'marker ' + (item.type === 'notice' ? 'bericht' : 'incident') +
          (state.selected === item.id ? ' gekozen' : ''),
        'vector-effect': 'non-scaling-stroke'
      });
      c.appendChild(titled(itemTitle(item)));
      c.addEventListener('click', function () { select(item.id, false); });
      layers.markers.appendChild(c);
    });
    rescaleMarkers();
  }

  // Pan by dragging, zoom with the wheel, the buttons or the keyboard.
  var drag = null;
  svg.addEventListener('pointerdown', function (e) {
    if (!state.view || e.button !== 0) { return; }
    drag = { x: e.clientX, y: e.clientY, view: state.view.slice(), moved: false };
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener('pointermove', function (e) {
    if (drag) {
      var u = unitsPerPixel();
      var dx = (e.clientX - drag.x) * u, dy = (e.clientY - drag.y) * u;
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) { drag.moved = true; }
      setView([drag.view[0] - dx, drag.view[1] - dy, drag.view[2], drag.view[3]]);
      return;
    }
    hover(e);
  });
  function endDrag() { if (drag && drag.moved) { scheduleMap(); } drag = null; }
  svg.addEventListener('pointerup', endDrag);
  svg.addEventListener('pointercancel', endDrag);
  svg.addEventListener('pointerleave', function () { show(el('kaart-info'), false); });
  svg.addEventListener('wheel', function (e) {
    if (!state.view) { return; }
    e.preventDefault();
    var r = svg.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.4 : 1 / 1.4, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
  }, { passive: false });

  function zoom(factor, fx, fy) {
    if (!state.view) { return; }
    var next = geo.zoomView(state.view, factor, fx, fy);
    if (next[2] < 1e-4 || next[2] > 400) { return; }
    setView(next);
    scheduleMap();
  }
  el('inzoomen').addEventListener('click', function () { zoom(2, 0.5, 0.5); });
  el('uitzoomen').addEventListener('click', function () { zoom(0.5, 0.5, 0.5); });
  el('alles').addEventListener('click', function () {
    state.fitted = false;
    loadMap(null);
  });
  svg.addEventListener('keydown', function (e) {
    if (!state.view) { return; }
    var step = 0.15, v = state.view;
    var moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) {
      e.preventDefault();
      setView([v[0] + v[2] * moves[e.key][0], v[1] + v[3] * moves[e.key][1], v[2], v[3]]);
      scheduleMap();
    } else if (e.key === '+' || e.key === '=') { zoom(1.5, 0.5, 0.5); } else if (e.key === '-') { zoom(1 / 1.5, 0.5, 0.5); }
  });

  function hover(e) {
    var info = el('kaart-info');
    var t = e.target;
    var title = t && t.querySelector ? t.querySelector('title') : null;
    if (!title) { show(info, false); return; }
    setText(info, title.textContent);
    show(info, true);
  }

  window.addEventListener('resize', function () {
    if (!state.view) { return; }
    var b = geo.viewBBox(state.view, state.k);
    fitTo(b, 0);
    scheduleMap();
  });

  // --- the feed ----------------------------------------------------------------------------

  function itemTitle(item) {
    if (item.type === 'notice') {
      var n = item.notice || {};
      var extra = [MSG_TYPES[n.msg_type], STATUSES[n.status], n.expired ? 'verlopen' : '']
        .filter(Boolean).join(', ');
      return 'Politiebericht: ' + (CATEGORIES[n.category] || n.category) + (extra ? ' (' + extra + ')' : '');
    }
    var what = TOPICS[item.topic] || TOPICS.unknown;
    return item.reports > 1 ? 'Incident: ' + what + ' – ' + plural(item.reports, 'melding', 'meldingen')
      : 'Melding: ' + what;
  }

  function reachBar(reach) {
    var w = 160, h = 10;
    var bar = svgEl('svg', {
      'class': 'bereikbalk', width: w, height: h, viewBox: '0 0 ' + w + ' ' + h,
      role: 'img', 'aria-hidden': 'true'
    });
    bar.appendChild(svgEl('rect', { 'class': 'achter', x: 0, y: 0, width: w, height: h, rx: 2 }));
    var planned = Math.max(reach.planned, 1), x = 0;
    [['afgeleverd', reach.reached], ['mislukt', reach.failed]].forEach(function (part) {
      var pw = Math.min(w - x, (part[1] / planned) * w);
      if (pw > 0) {
        bar.appendChild(svgEl('rect', { 'class': part[0], x: x.toFixed(2), y: 0, width: pw.toFixed(2), height: h }));
        x += pw;
      }
    });
    return bar;
  }

  function reachNode(reach) {
    var box = document.createElement('div');
    box.className = 'bereik';
    var line = document.createElement('p');
    line.className = 'bereiktekst';
    if (!reach) {
      line.textContent = 'Nog geen bezorging geregistreerd';
      box.appendChild(line);
      return box;
    }
    if (!reach.planned) {
      var o = reach.outcomes || {};
      var why = Object.keys(o).map(function (k) { return OUTCOMES[k] || k; }).join(', ');
      line.textContent = 'Niemand te bereiken' + (why ? ' (' + why + ')' : '');
      box.appendChild(line);
      return box;
    }
    line.textContent = 'Bereikt ' + fmtNumber(reach.reached) + ' van ' + fmtNumber(reach.planned);
    box.appendChild(line);
    box.appendChild(reachBar(reach));
    var rest = [];
    if (reach.failed) { rest.push(fmtNumber(reach.failed) + ' mislukt'); }
    if (reach.pending) { rest.push(fmtNumber(reach.pending) + ' onderweg'); }
    Object.keys(reach.outcomes || {}).forEach(function (k) {
      if (['delivered', 'failed_permanent', 'failed_transient', 'undelivered'].indexOf(k) < 0) {
        rest.push(fmtNumber(reach.outcomes[k]) + ' ' + (OUTCOMES[k] || k));
      }
    });
    if (rest.length) {
      var more = document.createElement('p');
      more.className = 'bereikdetail';
      more.textContent = rest.join(' · ');
      box.appendChild(more);
    }
    return box;
  }

  function itemNode(item) {
    var li = document.createElement('li');
    li.className = 'item ' + item.type + (state.selected === item.id ? ' gekozen' : '');
    li.setAttribute('data-id', item.id);
    li.tabIndex = 0;
    var head = document.createElement('p');
    head.className = 'kop';
    var time = document.createElement('time');
    time.dateTime = item.last_at;
    time.textContent = fmtTime(item.last_at);
    var title = document.createElement('strong');
    title.textContent = itemTitle(item);
    head.appendChild(time);
    head.appendChild(title);
    li.appendChild(head);

    var where = document.createElement('p');
    where.className = 'waar';
    var names = (item.area_names || []).join(', ');
    if (item.areas > (item.area_names || []).length) { names += ' +' + (item.areas - item.area_names.length); }
    var groups = item.groups || [];
    where.textContent = (names || 'Geen buurt bekend') + ' · ' +
      (groups.length ? plural(groups.length, 'groep', 'groepen') +
        (item.adjacent_groups ? ' (' + fmtNumber(item.adjacent_groups) + ' aangrenzend)' : '')
        : 'geen groep');
    li.appendChild(where);

    if (item.type === 'incident') {
      var meta = [];
      Object.keys(item.channels || {}).forEach(function (c) {
        meta.push(fmtNumber(item.channels[c]) + '× ' + (CHANNELS[c] || c));
      });
      if (item.held) { meta.push(fmtNumber(item.held) + ' vastgehouden door de huisregels'); }
      if (meta.length) {
        var m = document.createElement('p');
        m.className = 'meta';
        m.textContent = meta.join(' · ');
        li.appendChild(m);
      }
    }
    li.appendChild(reachNode(item.reach));
    var id = document.createElement('p');
    id.className = 'kenmerk';
    id.textContent = 'Kenmerk ' + item.id;
    li.appendChild(id);
    li.addEventListener('click', function () { select(item.id, true); });
    li.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(item.id, true); }
    });
    return li;
  }

  function select(id, zoomTo) {
    state.selected = id;
    var item = state.items.filter(function (i) { return i.id === id; })[0];
    Array.prototype.forEach.call(el('feed').children, function (li) {
      li.classList.toggle('gekozen', li.getAttribute('data-id') === id);
    });
    Array.prototype.forEach.call(layers.markers.children, function (c) {
      c.classList.toggle('gekozen', c.getAttribute('data-id') === id);
    });
    if (zoomTo && item && item.point && state.k !== null) {
      var d = 0.01;
      fitTo([item.point[0] - d, item.point[1] - d, item.point[0] + d, item.point[1] + d], 0.5);
      scheduleMap();
    }
  }

  function drawFeed(data) {
    state.items = data.items || [];
    var list = el('feed');
    clear(list);
    state.items.forEach(function (item) { list.appendChild(itemNode(item)); });
    show(el('feed-leeg'), state.items.length === 0);
    var incidents = state.items.filter(function (i) { return i.type === 'incident'; }).length;
    setText(el('feed-samenvatting'), plural(incidents, 'melding of incident', 'meldingen en incidenten') +
      ', ' + plural(state.items.length - incidents, 'politiebericht', 'politieberichten') +
      (data.since ? ' sinds ' + fmtTime(data.since) : ''));
    if (state.k !== null) { drawMarkers(state.items); }
  }

  function pollFeed() {
    window.clearTimeout(state.feedTimer);
    getJSON('/v1/ops/feed?limit=50').then(function (data) {
      markLive(data);
      drawFeed(data);
      // Areas or groups changed since the map was drawn: fetch it again.
      if (state.mapVersion !== null && data.version !== state.mapVersion && state.view) { scheduleMap(); }
      state.feedTimer = window.setTimeout(pollFeed, FEED_EVERY_MS);
    }).catch(function (err) {
      if (!failed(err)) { state.feedTimer = window.setTimeout(pollFeed, FEED_EVERY_MS * 2); }
    });
  }

  // --- delivery per channel ----------------------------------------------------------------

  function chart(series, minutes) {
    var w = 240, h = 48, bw = w / Math.max(minutes, 1);
    var top = 1;
    for (var i = 0; i < minutes; i++) {
      top = Math.max(top, series.delivered[i] + series.failed[i] + series.other[i]);
    }
    var box = svgEl('svg', {
      'class': 'grafiek', width: w, height: h + 12, viewBox: '0 0 ' + w + ' ' + (h + 12), role: 'img'
    });
    box.appendChild(titled('Per minuut, laatste ' + minutes + ' minuten; hoogste staaf ' + fmtNumber(top)));
    box.appendChild(svgEl('line', { x1: 0, y1: h + 0.5, x2: w, y2: h + 0.5, 'class': 'as' }));
    for (var m = 0; m < minutes; m++) {
      var y = h;
      [['afgeleverd', series.delivered[m]], ['mislukt', series.failed[m]], ['overig', series.other[m]]].forEach(function (part) {
        if (!part[1]) { return; }
        var ph = (part[1] / top) * h;
        y -= ph;
        box.appendChild(svgEl('rect', {
          'class': part[0], x: (m * bw + 0.5).toFixed(2), y: y.toFixed(2),
          width: Math.max(bw - 1, 0.5).toFixed(2), height: ph.toFixed(2)
        }));
      });
    }
    var label = svgEl('text', { x: 0, y: h + 11, 'class': 'aslabel' });
    label.textContent = '-' + minutes + ' min';
    var now = svgEl('text', { x: w, y: h + 11, 'class': 'aslabel eind' });
    now.textContent = 'nu';
    box.appendChild(label);
    box.appendChild(now);
    return box;
  }

  function drawDelivery(data) {
    var box = el('kanalen');
    clear(box);
    var channels = data.channels || [];
    show(el('levering-leeg'), channels.length === 0);
    setText(el('levering-samenvatting'), 'Laatste ' + data.minutes + ' minuten, per minuut.');
    channels.forEach(function (c) {
      var div = document.createElement('div');
      div.className = 'kanaal';
      div.setAttribute('data-channel', c.channel);
      var h = document.createElement('h3');
      h.textContent = CHANNELS[c.channel] || c.channel;
      div.appendChild(h);
      var nums = document.createElement('p');
      nums.className = 'cijfers';
      var rate = c.failure_rate === null ? '' : ' (' + (c.failure_rate * 100).toLocaleString('nl-NL', { maximumFractionDigits: 1 }) + ' %)';
      nums.textContent = fmtNumber(c.delivered) + ' afgeleverd · ' + fmtNumber(c.failed) + ' mislukt' + rate +
        ' · ' + c.recent_per_minute.toLocaleString('nl-NL') + '/min (laatste ' + data.recent_minutes + ' min)';
      div.appendChild(nums);
      div.appendChild(chart(c.per_minute, data.minutes));
      var outs = Object.keys(c.window).filter(function (k) { return k !== 'delivered'; });
      if (outs.length) {
        var o = document.createElement('p');
        o.className = 'uitkomsten';
        o.textContent = outs.map(function (k) { return fmtNumber(c.window[k]) + ' ' + (OUTCOMES[k] || k); }).join(' · ');
        div.appendChild(o);
      }
      box.appendChild(div);
    });
    var none = data.no_recipient || {};
    var keys = Object.keys(none);
    var zonder = el('zonder-ontvanger');
    setText(zonder, keys.length ? 'Zonder ontvanger: ' + keys.map(function (k) {
      return fmtNumber(none[k]) + ' ' + (OUTCOMES[k] || k);
    }).join(' · ') : '');
    show(zonder, keys.length > 0);
  }

  function pollDelivery() {
    window.clearTimeout(state.deliveryTimer);
    getJSON('/v1/ops/delivery?minutes=60').then(function (data) {
      drawDelivery(data);
      state.deliveryTimer = window.setTimeout(pollDelivery, DELIVERY_EVERY_MS);
    }).catch(function (err) {
      if (!failed(err)) { state.deliveryTimer = window.setTimeout(pollDelivery, DELIVERY_EVERY_MS * 2); }
    });
  }

  // --- start -------------------------------------------------------------------------------

  var first = keyFromFragment() || storedKey();
  if (first) { open(first); } else { askForKey(''); }
})();
