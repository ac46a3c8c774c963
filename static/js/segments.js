/*
 * Relay SMS segment counter for the browser (live count while typing).
 *
 * Twin of credits/segments.py: same rules, same tables. The three table literals below are
 * JSON-compatible on purpose: tests/test_segments.py parses them and asserts they equal the
 * Python tables, so the two sides cannot drift. Edit the Python module first, then copy.
 *
 * Rules: GSM-7 when every character is in GSM_BASIC (1 septet) or GSM_EXTENSION (2 septets);
 * 160 septets single, 153 per concatenated segment, an escape sequence never straddles a
 * segment boundary. Otherwise UCS-2: UTF-16 code units (emoji outside the BMP = 2), 70 single,
 * 67 per concatenated segment, a surrogate pair never straddles a boundary. Empty text = 1
 * segment, as Twilio's calculator says.
 *
 * Plain script, no dependencies: <script src=".../segments.js"></script> defines
 * window.RelaySegments; under CommonJS (node) it is also module.exports.
 */
(function (root) {
  "use strict";

  // ---- tables (keep identical to credits/segments.py) ------------------------------------
  const GSM_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  const GSM_EXTENSION = "\f^{}\\[~]|€";
  const GSM_LOOKALIKES = {
    "\u00ab": "\"",
    "\u00bb": "\"",
    "\u201c": "\"",
    "\u201d": "\"",
    "\u201e": "\"",
    "\u201f": "\"",
    "\u2033": "\"",
    "\u02ba": "\"",
    "\u02ee": "\"",
    "\u275d": "\"",
    "\u275e": "\"",
    "\u301d": "\"",
    "\u301e": "\"",
    "\uff02": "\"",
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u2039": "'",
    "\u203a": "'",
    "`": "'",
    "\u00b4": "'",
    "\u02b9": "'",
    "\u02bb": "'",
    "\u02bc": "'",
    "\u02bd": "'",
    "\u02c8": "'",
    "\u02ca": "'",
    "\u02cb": "'",
    "\u275b": "'",
    "\u275c": "'",
    "\uff07": "'",
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2043": "-",
    "\u2212": "-",
    "\ufe58": "-",
    "\ufe63": "-",
    "\uff0d": "-",
    "\u2022": "-",
    "\u2023": "-",
    "\u2219": "-",
    "\u25e6": "-",
    "\u2026": "...",
    "\u203c": "!!",
    "\u2047": "??",
    "\u2048": "?!",
    "\u2049": "!?",
    "\t": " ",
    "\u00a0": " ",
    "\u2000": " ",
    "\u2001": " ",
    "\u2002": " ",
    "\u2003": " ",
    "\u2004": " ",
    "\u2005": " ",
    "\u2006": " ",
    "\u2007": " ",
    "\u2008": " ",
    "\u2009": " ",
    "\u200a": " ",
    "\u202f": " ",
    "\u205f": " ",
    "\u3000": " ",
    "\u0085": "\n",
    "\u2028": "\n",
    "\u2029": "\n",
    "\u00ad": "",
    "\u200b": "",
    "\u2060": "",
    "\ufeff": "",
    "\uff01": "!",
    "\uff03": "#",
    "\uff05": "%",
    "\uff06": "&",
    "\uff08": "(",
    "\uff09": ")",
    "\uff0a": "*",
    "\uff0b": "+",
    "\uff0c": ",",
    "\uff0e": ".",
    "\uff0f": "/",
    "\uff1a": ":",
    "\uff1b": ";",
    "\uff1c": "<",
    "\uff1d": "=",
    "\uff1e": ">",
    "\uff1f": "?",
    "\uff20": "@",
    "\u2044": "/",
    "\u2215": "/",
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl"
  };
  // ---- end of tables ----------------------------------------------------------------------

  var GSM_SINGLE = 160;
  var GSM_MULTI = 153;
  var UCS2_SINGLE = 70;
  var UCS2_MULTI = 67;

  var BASIC = new Set(Array.from(GSM_BASIC));
  var EXTENSION = new Set(Array.from(GSM_EXTENSION));

  // widths: array of 1/2 per character (code point). Returns [segments, remaining, perSegment].
  function layout(widths, units, single, multi) {
    if (units <= single) return [1, single - units, single]; // empty text: one segment
    var used = 0;
    var segments = 1;
    for (var i = 0; i < widths.length; i++) {
      var w = widths[i];
      if (used + w > multi) {
        segments += 1;
        used = 0;
      }
      used += w;
    }
    return [segments, multi - used, multi];
  }

  function info(text) {
    text = text == null ? "" : String(text);
    var nonGsm = [];
    var seen = new Set();
    var septetWidths = [];
    var septets = 0;
    var chars = Array.from(text); // code points; a lone surrogate stays one element
    for (var i = 0; i < chars.length; i++) {
      var ch = chars[i];
      if (BASIC.has(ch)) {
        septetWidths.push(1);
        septets += 1;
      } else if (EXTENSION.has(ch)) {
        septetWidths.push(2);
        septets += 2;
      } else if (!seen.has(ch)) {
        seen.add(ch);
        nonGsm.push(ch);
      }
    }
    var encoding, units, r;
    if (nonGsm.length === 0) {
      encoding = "GSM-7";
      units = septets;
      r = layout(septetWidths, units, GSM_SINGLE, GSM_MULTI);
    } else {
      encoding = "UCS-2";
      units = text.length; // JS strings are UTF-16 code units already
      var unitWidths = chars.map(function (c) { return c.length; });
      r = layout(unitWidths, units, UCS2_SINGLE, UCS2_MULTI);
    }
    return {
      encoding: encoding,
      units: units,
      segments: r[0],
      perSegment: r[2],
      remainingInSegment: r[1],
      nonGsmChars: nonGsm
    };
  }

  // Twin of credits.segments.normalize_line_breaks: CR LF and a lone CR become LF, as the
  // server stores (and sends) every message. A textarea's value already uses LF; pasted or
  // scripted text may not.
  function normalizeLineBreaks(text) {
    return (text == null ? "" : String(text)).replace(/\r\n?/g, "\n");
  }

  function replaceLookalikes(text) {
    text = text == null ? "" : String(text);
    var out = "";
    var chars = Array.from(text);
    for (var i = 0; i < chars.length; i++) {
      var ch = chars[i];
      out += Object.prototype.hasOwnProperty.call(GSM_LOOKALIKES, ch) ? GSM_LOOKALIKES[ch] : ch;
    }
    return out;
  }

  var api = {
    info: info,
    normalizeLineBreaks: normalizeLineBreaks,
    replaceLookalikes: replaceLookalikes,
    GSM_BASIC: GSM_BASIC,
    GSM_EXTENSION: GSM_EXTENSION,
    GSM_LOOKALIKES: GSM_LOOKALIKES
  };
  if (root) root.RelaySegments = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof window !== "undefined" ? window : typeof globalThis !== "undefined" ? globalThis : this);
