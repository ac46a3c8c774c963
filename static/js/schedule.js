/*
 * Relay: the schedule form of a text message or an email (progressive enhancement, no
 * framework).
 *
 * - a live segment counter under the message (window.RelaySegments from segments.js):
 *   encoding, segments, characters left in the current segment, the characters forcing
 *   UCS-2 and a button that replaces look-alike characters (curly quotes, dashes…);
 * - piped-field chips that insert ${field} at the cursor;
 * - the conditions builder: add and remove rows, show the metadata field input only for
 *   Metadata and hide the value for "is empty";
 * - show the conditions only for "Only participants who meet conditions", the date and time
 *   only for "Schedule for later", and name the submit button after the choice.
 * - emails: chips insert into the field last focused (subject, HTML body, plain-text part);
 *   "send on completion" shows only for a thank-you and replaces the send time.
 * Changes fire "change" on the form so that htmx refreshes the summary (matching
 * participants, estimated cost). The server validates everything again.
 */
(function () {
  "use strict";

  var form = document.getElementById("schedule-form");
  if (!form) return;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function notifyChange() { form.dispatchEvent(new Event("change", { bubbles: true })); }
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  // ---- segment counter ---------------------------------------------------------------------
  var message = form.querySelector("textarea[name=message]");
  var counter = document.getElementById("segment-counter");
  var nonGsmBox = document.getElementById("non-gsm");
  var nonGsmText = document.getElementById("non-gsm-text");
  var replaceButton = document.getElementById("replace-lookalikes");
  var LINK = /\$\{\s*link\s*\}/g;
  var OPT_OUT = /\$\{\s*opt_out_link\s*\}/g;
  var OTHER_FIELD = /\$\{\s*(?!link\s*\}|opt_out_link\s*\})[^}]+\}/;

  // One character as a small key cap; invisible ones by their code point (U+00A0).
  function charElement(ch) {
    var code = ch.codePointAt(0);
    var key = document.createElement("kbd");
    key.className = "char";
    if (/\s/.test(ch) || code < 32 || (code >= 0x200b && code <= 0x200f) || code === 0xfeff || code === 0xad) {
      key.textContent = "U+" + code.toString(16).toUpperCase().padStart(4, "0");
    } else {
      key.textContent = ch;
    }
    key.title = "U+" + code.toString(16).toUpperCase().padStart(4, "0");
    return key;
  }

  function updateCounter() {
    if (!message || !counter || !window.RelaySegments) return;
    // What the server will store and send (line breaks as LF), not what the form submits.
    var text = window.RelaySegments.normalizeLineBreaks(message.value);
    var filled = text
      .replace(LINK, counter.dataset.link || "")
      .replace(OPT_OUT, counter.dataset.optOutLink || "");
    var info = window.RelaySegments.info(filled);
    var parts = [];
    parts.push("<strong>" + plural(info.segments, "segment", "segments") + "</strong>");
    parts.push(info.encoding === "GSM-7" ? "GSM-7" : "Unicode (UCS-2)");
    parts.push(info.remainingInSegment + " of " + info.perSegment + " characters left in " +
      (info.segments > 1 ? "segment " + info.segments : "this segment"));
    parts.push(plural(info.units, "character", "characters"));
    var notes = [];
    if (filled !== text) notes.push("Links are counted at their real length.");
    if (OTHER_FIELD.test(text)) notes.push("Names and other piped fields change the length for each recipient.");
    counter.innerHTML = parts.join(" \u00b7 ") +
      (notes.length ? '<div class="small muted">' + notes.join(" ") + "</div>" : "");
    counter.dataset.segments = String(info.segments);
    counter.dataset.encoding = info.encoding;
    counter.classList.toggle("ucs2", info.encoding !== "GSM-7");

    var lookalikes = window.RelaySegments.replaceLookalikes(text) !== text;
    if (info.nonGsmChars.length) {
      nonGsmText.textContent = "Not in the GSM-7 alphabet, so each segment holds 70 characters " +
        "instead of 160: ";
      info.nonGsmChars.forEach(function (ch) { nonGsmText.appendChild(charElement(ch)); });
      nonGsmBox.hidden = false;
    } else if (lookalikes) {
      nonGsmText.textContent = "Some characters can be replaced by plain equivalents.";
      nonGsmBox.hidden = false;
    } else {
      nonGsmBox.hidden = true;
    }
    replaceButton.hidden = !lookalikes;
  }

  if (message) {
    message.addEventListener("input", updateCounter);
    updateCounter();
  }
  if (replaceButton) {
    replaceButton.addEventListener("click", function () {
      message.value = window.RelaySegments.replaceLookalikes(message.value);
      message.dispatchEvent(new Event("input", { bubbles: true }));
      message.focus();
    });
  }

  // ---- message library: picking a saved message copies its text (and subject) -----------
  var libraryPick = document.getElementById("library-pick");
  if (libraryPick) {
    libraryPick.addEventListener("change", function () {
      var option = libraryPick.options[libraryPick.selectedIndex];
      if (!option || !option.value) { return; }
      var body = document.getElementById("id_message");
      var subject = document.getElementById("id_subject");
      if (body) {
        body.value = option.getAttribute("data-message") || "";
        body.dispatchEvent(new Event("input", { bubbles: true }));
      }
      if (subject && option.getAttribute("data-subject")) {
        subject.value = option.getAttribute("data-subject");
        subject.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });
  }

  // ---- piped-field chips -------------------------------------------------------------------
  var pipeTarget = message;
  $all("[data-pipe-target]", form).forEach(function (input) {
    input.addEventListener("focus", function () { pipeTarget = input; });
  });
  $all("[data-insert]", form).forEach(function (chip) {
    chip.addEventListener("click", function () {
      var token = chip.getAttribute("data-insert");
      var target = pipeTarget || message;
      var start = target.selectionStart == null ? target.value.length : target.selectionStart;
      var end = target.selectionEnd == null ? start : target.selectionEnd;
      target.value = target.value.slice(0, start) + token + target.value.slice(end);
      target.focus();
      target.setSelectionRange(start + token.length, start + token.length);
      target.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });

  // ---- conditions builder ------------------------------------------------------------------
  var rows = document.getElementById("condition-rows");
  var template = document.getElementById("condition-row-template");

  function syncRow(row) {
    var criterion = $("[data-criterion]", row).value;
    var operator = $("[data-operator]", row).value;
    var field = $("[data-field]", row);
    var value = $("[data-value]", row);
    field.hidden = criterion !== "metadata";
    value.hidden = operator === "is_empty";
    if (criterion === "role") value.setAttribute("list", "project-roles");
    else value.removeAttribute("list");
  }

  function wireRow(row) {
    syncRow(row);
    row.addEventListener("change", function () { syncRow(row); });
    $("[data-remove-condition]", row).addEventListener("click", function () {
      row.remove();
      if (!$all("[data-condition-row]", rows).length) addRow();
      notifyChange();
    });
  }

  function addRow() {
    var fragment = template.content.cloneNode(true);
    var row = fragment.querySelector("[data-condition-row]");
    rows.appendChild(fragment);
    wireRow(row);
    return row;
  }

  if (rows && template) {
    $all("[data-condition-row]", rows).forEach(wireRow);
    document.getElementById("add-condition").addEventListener("click", function () {
      var row = addRow();
      $("[data-criterion]", row).focus();
      notifyChange();
    });
  }

  // ---- show what the choices need ----------------------------------------------------------
  function checked(name) {
    var input = form.querySelector("input[name=" + name + "]:checked");
    return input ? input.value : null;
  }

  var conditions = document.getElementById("conditions");
  var sendLater = document.getElementById("send-later");
  var submit = document.getElementById("submit-button");
  var reminderNote = document.getElementById("reminder-note");
  var completionChoice = document.getElementById("completion-choice");
  var onCompletion = form.querySelector("input[name=on_completion]");
  var whenChoice = document.getElementById("when-choice");

  function syncChoices() {
    if (conditions) conditions.hidden = checked("audience") !== "some";
    var later = checked("when") === "later";
    if (sendLater) sendLater.hidden = !later;
    if (submit) submit.textContent = later ? submit.dataset.labelLater : submit.dataset.labelNow;
    if (reminderNote && checked("kind")) reminderNote.hidden = checked("kind") !== "reminder";
    if (completionChoice && checked("kind")) {
      var thankYou = checked("kind") === "thank_you";
      completionChoice.hidden = !thankYou;
      var completion = thankYou && onCompletion && onCompletion.checked;
      if (whenChoice) whenChoice.hidden = completion;
      if (completion && submit) submit.textContent = submit.dataset.labelCompletion;
    }
  }

  $all("input[name=audience], input[name=when], input[name=kind], input[name=on_completion]", form).forEach(function (input) {
    input.addEventListener("change", syncChoices);
  });
  syncChoices();
})();
