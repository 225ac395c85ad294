/* buurtalert resident page: pick a place, say whether 112 was called, describe, send.
 * No inline script (strict CSP); everything comes from this origin. */
(function () {
  'use strict';

  var MAX_TEXT = 2000;
  var NL_CENTER = [52.15, 5.3];
  var NL_ZOOM = 7;
  var SEND_TIMEOUT_MS = 20000;

  var el = function (id) { return document.getElementById(id); };
  var form = el('meldformulier');
  var sendButton = el('versturen');
  var sendError = el('verstuurfout');
  var placeStatus = el('plek-status');
  var placeError = el('plek-fout');
  var mapNote = el('kaart-notitie');
  var text = el('tekst');
  var counter = el('tekst-teller');
  var confirmation = el('bevestiging');

  var state = {
    lat: null,
    lon: null,
    // One key per form fill: a double click or a retry after a lost answer is the same alert.
    key: newKey(),
    sending: false,
    summary: null,
    features: [],
    fittedOnce: false
  };

  function newKey() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? '0' : '') + b.toString(16);
    }).join('');
  }

  function show(node, on) { node.hidden = !on; }

  function setText(node, value) { node.textContent = value; }

  // --- the map ----------------------------------------------------------------------------

  // Without Leaflet (a blocked or failed download) the form still works with "Gebruik mijn
  // locatie"; only the map is missing.
  var map = null, grid = null, areas = null, marker = null;

  function setUpMap() {
    map = L.map('kaart', {
      center: NL_CENTER,
      zoom: NL_ZOOM,
      minZoom: 5,
      maxZoom: 18,
      maxBounds: [[-85, -180], [85, 180]],
      maxBoundsViscosity: 1.0
    });
    map.attributionControl.setPrefix('Leaflet');
    grid = L.layerGroup().addTo(map);
    areas = L.geoJSON(null, {
      style: function () {
        return { color: '#2b5f8a', weight: 1.5, opacity: 0.9, fillColor: '#8fb8dc', fillOpacity: 0.22 };
      },
      onEachFeature: function (feature, layer) {
        var name = document.createElement('span');
        // Names come from imported files: text, never HTML.
        name.textContent = (feature.properties && feature.properties.name) || '';
        layer.bindTooltip(name, { sticky: true, direction: 'top', className: 'gebied' });
      }
    }).addTo(map);
    map.on('moveend', scheduleLoad);
    map.on('click', function (e) {
      setPlace(e.latlng.lat, e.latlng.lng);
    });
    el('kaart').addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        var c = map.getCenter();
        setPlace(c.lat, c.lng);
      }
    });
    drawGrid();
    loadAreas();
  }

  // A faint lat/lon grid, so that an empty map still shows that it moves and zooms.
  function drawGrid() {
    grid.clearLayers();
    var b = map.getBounds();
    var span = Math.max(b.getEast() - b.getWest(), b.getNorth() - b.getSouth());
    var steps = [10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) {
      if (span / steps[i] >= 3) { step = steps[i]; break; }
    }
    var style = { color: '#c5cbc0', weight: 1, interactive: false };
    var south = Math.max(b.getSouth(), -85), north = Math.min(b.getNorth(), 85);
    var west = Math.max(b.getWest(), -180), east = Math.min(b.getEast(), 180);
    for (var x = Math.ceil(west / step) * step; x <= east; x += step) {
      grid.addLayer(L.polyline([[south, x], [north, x]], style));
    }
    for (var y = Math.ceil(south / step) * step; y <= north; y += step) {
      grid.addLayer(L.polyline([[y, west], [y, east]], style));
    }
  }

  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

  function note(message) {
    setText(mapNote, message || '');
    show(mapNote, Boolean(message));
  }

  var loadTimer = null;
  var loading = null;

  function loadAreas() {
    var b = map.getBounds().pad(0.2);
    var bbox = [
      clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
      clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)
    ].map(function (v) { return v.toFixed(5); }).join(',');
    if (loading) { loading.abort(); }
    var ctrl = new AbortController();
    loading = ctrl;
    fetch('/v1/areas.geojson?bbox=' + encodeURIComponent(bbox), {
      headers: { Accept: 'application/geo+json' },
      signal: ctrl.signal
    }).then(function (resp) {
      if (resp.status === 422) {
        // Too many areas for this view: the server asks us to zoom in.
        areas.clearLayers();
        state.features = [];
        note('Zoom in om de buurtgrenzen te zien. U kunt ook nu al een plek aanwijzen.');
        return null;
      }
      if (!resp.ok) { throw new Error('status ' + resp.status); }
      return resp.json();
    }).then(function (collection) {
      if (!collection) { return; }
      areas.clearLayers();
      areas.addData(collection);
      state.features = collection.features || [];
      labelAreas();
      if (collection.areas_total === 0) {
        note('Er zijn nog geen buurtgrenzen ingeladen. U kunt toch een plek op de kaart ' +
             'aanwijzen of uw locatie gebruiken.');
      } else if (state.features.length === 0) {
        note('Hier liggen geen bekende buurten. Schuif of zoom uit om ze te zien.');
      } else {
        note('');
      }
      fitToAreasOnce(collection.areas_extent);
      if (state.lat !== null) { describePlace(); }
    }).catch(function (err) {
      if (err && err.name === 'AbortError') { return; }
      note('De buurtgrenzen konden niet worden geladen. U kunt toch een plek aanwijzen.');
    });
  }

  // A phone has no hover: with few areas in view their names stay on the map.
  var MAX_LABELS = 25;

  function labelAreas() {
    if (state.features.length > MAX_LABELS) { return; }
    areas.eachLayer(function (layer) {
      var tip = layer.getTooltip();
      if (!tip) { return; }
      var content = tip.getContent();
      layer.unbindTooltip();
      layer.bindTooltip(content, { permanent: true, direction: 'center', className: 'gebied naam' });
    });
  }

  // A deployment for one town starts on that town rather than on the whole country.
  function fitToAreasOnce(extent) {
    if (state.fittedOnce || !extent || state.lat !== null) { return; }
    state.fittedOnce = true;
    var bounds = L.latLngBounds([extent[1], extent[0]], [extent[3], extent[2]]);
    if (map.getBounds().contains(bounds)) {
      map.fitBounds(bounds, { padding: [12, 12], maxZoom: 16, animate: false });
    }
  }

  function scheduleLoad() {
    drawGrid();
    if (loadTimer) { window.clearTimeout(loadTimer); }
    loadTimer = window.setTimeout(loadAreas, 150);
  }

  // --- the place --------------------------------------------------------------------------

  function ringContains(ring, lon, lat) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) {
        inside = !inside;
      }
    }
    return inside;
  }

  function polygonContains(rings, lon, lat) {
    if (!rings.length || !ringContains(rings[0], lon, lat)) { return false; }
    for (var h = 1; h < rings.length; h++) {
      if (ringContains(rings[h], lon, lat)) { return false; }
    }
    return true;
  }

  function areaNameAt(lon, lat) {
    for (var i = 0; i < state.features.length; i++) {
      var f = state.features[i], g = f.geometry;
      if (!g) { continue; }
      var polys = g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : [];
      for (var p = 0; p < polys.length; p++) {
        if (polygonContains(polys[p], lon, lat)) { return (f.properties && f.properties.name) || f.id; }
      }
    }
    return null;
  }

  function describePlace() {
    placeStatus.textContent = '';
    placeStatus.classList.add('gekozen');
    var name = areaNameAt(state.lon, state.lat);
    var head = document.createElement('span');
    head.textContent = name ? 'Plek gekozen in ' + name + '.' : 'Plek gekozen.';
    var coord = document.createElement('span');
    coord.className = 'coord';
    coord.textContent = 'Breedte ' + state.lat.toFixed(5) + ', lengte ' + state.lon.toFixed(5) +
      '. Klopt het niet? Tik op de juiste plek.';
    placeStatus.appendChild(head);
    placeStatus.appendChild(coord);
  }

  function setPlace(lat, lon) {
    state.lat = lat;
    state.lon = lon;
    if (!map) {
      // No map to show the marker on.
    } else if (marker) {
      marker.setLatLng([lat, lon]);
    } else {
      marker = L.marker([lat, lon], { keyboard: false, title: 'Gekozen plek', alt: 'Gekozen plek' }).addTo(map);
    }
    clearFieldError('stap-plek', placeError);
    describePlace();
    refreshSummary();
  }

  el('mijn-locatie').addEventListener('click', function () {
    if (!('geolocation' in navigator)) {
      placeStatus.classList.remove('gekozen');
      setText(placeStatus, 'Uw browser geeft hier geen locatie door. Tik op de kaart om de ' +
        'plek aan te wijzen.');
      return;
    }
    setText(placeStatus, 'Uw locatie wordt bepaald...');
    navigator.geolocation.getCurrentPosition(function (pos) {
      var c = pos.coords;
      if (map) { map.setView([c.latitude, c.longitude], Math.max(map.getZoom(), 16)); }
      setPlace(c.latitude, c.longitude);
      if (c.accuracy && c.accuracy > 500) {
        var warn = document.createElement('span');
        warn.className = 'coord';
        warn.textContent = 'Let op: uw locatie is onnauwkeurig (ongeveer ' +
          Math.round(c.accuracy) + ' meter). Controleer de plek op de kaart.';
        placeStatus.appendChild(warn);
      }
    }, function (err) {
      placeStatus.classList.remove('gekozen');
      var messages = {
        1: 'U heeft geen toestemming gegeven om uw locatie te gebruiken. Tik op de kaart om de ' +
           'plek aan te wijzen.',
        2: 'Uw locatie is nu niet te bepalen. Tik op de kaart om de plek aan te wijzen.',
        3: 'Het bepalen van uw locatie duurde te lang. Probeer het opnieuw of tik op de kaart.'
      };
      setText(placeStatus, messages[err.code] || messages[2]);
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  });

  // --- the form ---------------------------------------------------------------------------

  function called112() {
    var picked = form.querySelector('input[name="called_112"]:checked');
    return picked ? picked.value === 'ja' : null;
  }

  function updateCounter() {
    var n = text.value.length;
    setText(counter, n + ' van ' + MAX_TEXT + ' tekens');
    counter.classList.toggle('bijna', n > MAX_TEXT - 200);
  }

  text.addEventListener('input', function () {
    updateCounter();
    if (text.value.trim()) {
      clearFieldError('stap-tekst', el('tekst-fout'));
      text.removeAttribute('aria-invalid');
    }
    refreshSummary();
  });

  Array.prototype.forEach.call(form.querySelectorAll('input[name="called_112"]'), function (r) {
    r.addEventListener('change', function () {
      show(el('advies-nee'), called112() === false);
      clearFieldError('stap-112', el('fout-112'));
      refreshSummary();
    });
  });

  function fieldError(stepId, node, message) {
    el(stepId).classList.add('fout');
    setText(node, message);
    show(node, true);
  }

  function clearFieldError(stepId, node) {
    el(stepId).classList.remove('fout');
    show(node, false);
  }

  // The problems with the form as it is now, as [field id, message, step id, inline node id].
  function currentProblems() {
    var problems = [];
    if (state.lat === null) {
      problems.push(['kaart', 'Kies op de kaart waar het gebeurt, of gebruik uw locatie.',
        'stap-plek', 'plek-fout']);
    }
    if (called112() === null) {
      problems.push(['gebeld-ja', 'Geef aan of 112 al is gebeld.', 'stap-112', 'fout-112']);
    }
    var t = text.value.trim();
    if (!t) {
      problems.push(['tekst', 'Beschrijf kort wat u ziet.', 'stap-tekst', 'tekst-fout']);
    } else if (t.length > MAX_TEXT) {
      problems.push(['tekst', 'De tekst is te lang: maximaal ' + MAX_TEXT + ' tekens.',
        'stap-tekst', 'tekst-fout']);
    }
    return problems;
  }

  function validate() {
    var problems = currentProblems();
    problems.forEach(function (p) { fieldError(p[2], el(p[3]), p[1]); });
    if (problems.some(function (p) { return p[0] === 'tekst'; })) {
      text.setAttribute('aria-invalid', 'true');
    } else {
      text.removeAttribute('aria-invalid');
    }
    return problems;
  }

  // Once the resident fixes what the summary names, the summary goes (or shrinks) with it.
  function refreshSummary() {
    if (state.summary !== 'validation' || sendError.hidden) { return; }
    var problems = currentProblems();
    if (!problems.length) {
      show(sendError, false);
      state.summary = null;
    } else {
      fillSendError('De melding is nog niet verstuurd:', problems);
    }
  }

  function fillSendError(title, items) {
    sendError.textContent = '';
    var strong = document.createElement('strong');
    strong.textContent = title;
    sendError.appendChild(strong);
    if (items && items.length) {
      var ul = document.createElement('ul');
      items.forEach(function (item) {
        var li = document.createElement('li');
        if (item[0]) {
          var a = document.createElement('a');
          a.href = '#' + item[0];
          a.textContent = item[1];
          li.appendChild(a);
        } else {
          li.textContent = item[1];
        }
        ul.appendChild(li);
      });
      sendError.appendChild(ul);
    }
  }

  function showSendError(title, items, kind) {
    fillSendError(title, items);
    state.summary = kind || 'server';
    show(sendError, true);
    sendError.focus();
  }

  // What went wrong, in words a resident can act on; 112 stays the way out.
  var DANGER = ' Bij direct gevaar: bel 112.';

  function problemsFrom422(body) {
    var detail = body && body.detail;
    var items = [];
    if (Array.isArray(detail)) {
      detail.forEach(function (d) {
        var loc = (d && d.loc) || [];
        if (loc.indexOf('text') !== -1) {
          items.push(['tekst', 'De tekst is leeg of te lang (maximaal ' + MAX_TEXT + ' tekens).']);
        } else if (loc.indexOf('location') !== -1) {
          items.push(['kaart', 'De plek is ongeldig. Kies de plek opnieuw op de kaart.']);
        } else if (loc.indexOf('called_112') !== -1) {
          items.push(['gebeld-ja', 'Geef aan of 112 al is gebeld.']);
        }
      });
    }
    if (!items.length) {
      items.push([null, 'Controleer de plek, de keuze over 112 en de tekst.']);
    }
    return items;
  }

  function retrySeconds(resp) {
    var s = parseInt(resp.headers.get('Retry-After') || '', 10);
    return isFinite(s) && s > 0 ? s : null;
  }

  function setSending(on) {
    state.sending = on;
    sendButton.disabled = on;
    setText(sendButton, on ? 'Bezig met versturen...' : 'Melding versturen');
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    if (state.sending) { return; }
    show(sendError, false);
    var problems = validate();
    if (problems.length) {
      showSendError('De melding is nog niet verstuurd:', problems, 'validation');
      return;
    }
    var called = called112();
    var body = JSON.stringify({
      text: text.value.trim(),
      location: { lat: state.lat, lon: state.lon },
      called_112: called
    });
    setSending(true);
    var ctrl = new AbortController();
    var timer = window.setTimeout(function () { ctrl.abort(); }, SEND_TIMEOUT_MS);
    fetch('/v1/reports', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/json',
        'Idempotency-Key': state.key
      },
      body: body,
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctrl.signal
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) {
        return { resp: resp, data: data };
      });
    }).then(function (r) {
      var status = r.resp.status;
      if (status === 202 || status === 200) {
        showConfirmation(called, (r.data && r.data.alert_id) || '', !(r.data && r.data.covered === false));
      } else if (status === 422) {
        showSendError('De melding is niet geaccepteerd:', problemsFrom422(r.data));
      } else if (status === 429) {
        var wait = retrySeconds(r.resp);
        showSendError('Er zijn vanaf hier te veel meldingen kort na elkaar verstuurd. ' +
          (wait ? 'Wacht ' + wait + ' seconden' : 'Wacht even') + ' en probeer het opnieuw.' + DANGER);
      } else if (status === 503) {
        showSendError('De melding kon nu niet worden opgeslagen; er is niets verstuurd. ' +
          'Probeer het over enkele seconden opnieuw.' + DANGER);
      } else {
        showSendError('Er ging iets mis (foutcode ' + status + '). De melding is mogelijk niet ' +
          'verstuurd. Probeer het opnieuw.' + DANGER);
      }
    }).catch(function (err) {
      var timedOut = err && err.name === 'AbortError';
      showSendError((timedOut ? 'Er kwam geen antwoord van buurtalert. ' :
        'Geen verbinding met buurtalert. Controleer uw internetverbinding. ') +
        'Probeer het opnieuw; de melding wordt niet dubbel verstuurd.' + DANGER);
    }).then(function () {
      window.clearTimeout(timer);
      setSending(false);
    });
  });

  function showConfirmation(called, alertId, covered) {
    show(el('buiten-gebied'), !covered);
    setText(el('advies-112'), called
      ? 'U gaf aan dat 112 al is gebeld. Verandert de situatie of is er direct gevaar? Bel dan opnieuw 112.'
      : 'Bel 112 als er direct gevaar is. De buurtgroep ziet dat 112 nog niet is gebeld.');
    setText(el('kenmerk'), alertId ? alertId.slice(0, 8) : '-');
    show(form, false);
    show(confirmation, true);
    window.scrollTo(0, 0);
    el('bevestiging-kop').focus();
  }

  el('nieuwe-melding').addEventListener('click', function () {
    form.reset();
    state.key = newKey();
    state.lat = state.lon = null;
    if (marker) { map.removeLayer(marker); marker = null; }
    placeStatus.classList.remove('gekozen');
    setText(placeStatus, 'Nog geen plek gekozen.');
    show(el('advies-nee'), false);
    show(sendError, false);
    updateCounter();
    state.summary = null;
    ['stap-plek', 'stap-112', 'stap-tekst'].forEach(function (id) { el(id).classList.remove('fout'); });
    [placeError, el('fout-112'), el('tekst-fout')].forEach(function (node) { show(node, false); });
    text.removeAttribute('aria-invalid');
    show(confirmation, false);
    show(form, true);
    // The map was hidden with the form; Leaflet must measure its box again.
    if (map) { map.invalidateSize(); }
    el('saar').scrollIntoView();
  });

  updateCounter();
  if (typeof window.L !== 'undefined') {
    setUpMap();
  } else {
    el('kaart').hidden = true;
    note('De kaart kon niet worden geladen. Gebruik uw locatie, of laad de pagina opnieuw.');
  }
}());
