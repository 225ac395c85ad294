/* buurtalert ops page: the map's own projection and SVG paths (no map library, no tiles).
 *
 * A local equirectangular projection: x = lon * k, y = -lat, with k = cos(latitude of the
 * view's first centre). Over the Netherlands (about 3 degrees of latitude) shapes stay true
 * within a few percent, and pan and zoom are only a change of the SVG viewBox: paths are
 * built once per answer, never re-projected. Pure functions, exposed as window.buurtOpsGeo. */
(function (root) {
  'use strict';

  function scaleFor(lat) {
    return Math.max(0.05, Math.cos(lat * Math.PI / 180));
  }

  function project(lon, lat, k) { return [lon * k, -lat]; }

  function unproject(x, y, k) { return [x / k, -y]; }

  function num(v) {
    // Six decimals of a degree are about 0.1 m: more is only bytes in the DOM.
    return (Math.round(v * 1e6) / 1e6).toString();
  }

  function ringPath(ring, k) {
    var parts = [];
    for (var i = 0; i < ring.length; i++) {
      var p = project(ring[i][0], ring[i][1], k);
      parts.push((i === 0 ? 'M' : 'L') + num(p[0]) + ' ' + num(p[1]));
    }
    return parts.length ? parts.join('') + 'Z' : '';
  }

  /* SVG path data of a GeoJSON Polygon or MultiPolygon (holes drawn with fill-rule evenodd). */
  function geometryPath(geometry, k) {
    if (!geometry) { return ''; }
    var polygons = geometry.type === 'Polygon' ? [geometry.coordinates]
      : geometry.type === 'MultiPolygon' ? geometry.coordinates : [];
    var out = '';
    for (var i = 0; i < polygons.length; i++) {
      for (var j = 0; j < polygons[i].length; j++) { out += ringPath(polygons[i][j], k); }
    }
    return out;
  }

  /* The viewBox [x, y, w, h] that shows a bbox [minlon, minlat, maxlon, maxlat] whole in a
   * box of width x height pixels, centred, with `pad` (a share) around it. */
  function fitView(bbox, width, height, k, pad) {
    var a = project(bbox[0], bbox[3], k), b = project(bbox[2], bbox[1], k);
    var w = Math.max(b[0] - a[0], 1e-5), h = Math.max(b[1] - a[1], 1e-5);
    var grow = 1 + 2 * (pad || 0);
    w *= grow; h *= grow;
    var aspect = width / Math.max(height, 1);
    if (w / h > aspect) { h = w / aspect; } else { w = h * aspect; }
    var cx = (a[0] + b[0]) / 2, cy = (a[1] + b[1]) / 2;
    return [cx - w / 2, cy - h / 2, w, h];
  }

  /* The bbox (WGS84) a viewBox shows. */
  function viewBBox(view, k) {
    var nw = unproject(view[0], view[1], k), se = unproject(view[0] + view[2], view[1] + view[3], k);
    return [nw[0], se[1], se[0], nw[1]];
  }

  /* The viewBox zoomed by `factor` (>1 is in) about the point (fx, fy) given as shares of it. */
  function zoomView(view, factor, fx, fy) {
    var w = view[2] / factor, h = view[3] / factor;
    var px = view[0] + view[2] * fx, py = view[1] + view[3] * fy;
    return [px - w * fx, py - h * fy, w, h];
  }

  root.buurtOpsGeo = {
    scaleFor: scaleFor,
    project: project,
    unproject: unproject,
    ringPath: ringPath,
    geometryPath: geometryPath,
    fitView: fitView,
    viewBBox: viewBBox,
    zoomView: zoomView
  };
})(window);
