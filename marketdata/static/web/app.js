/* Xchange web app: live updates over the WebSocket stream at /ws/v1/.
 *
 * The pages are complete without this file; it only keeps them current. Each topic
 * starts with a snapshot and continues with updates numbered by `seq` (private
 * topics number per account); on a gap, or a heartbeat naming a later seq than the
 * last received, the topic is resubscribed, which makes the server send a fresh
 * snapshot. Decimals are shown exactly as the server sends them.
 */
(function () {
  "use strict";

  var DEPTH = 10;
  var MAX_TRADES = 20;
  var MAX_ORDERS = 20;
  var TERMINAL = { filled: 1, cancelled: 1, rejected: 1, expired: 1 };

  // -- small page behaviours --------------------------------------------------------

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var ticket = document.getElementById("ticket");
  if (ticket && ticket.elements.type && ticket.elements.price) {
    var withLimit = ["limit", "stop_limit"];
    var immediateOnly = ["market", "stop", "trailing_stop"];
    var enable = function (name, on) {
      if (ticket.elements[name]) ticket.elements[name].disabled = !on;
    };
    var syncTicket = function () {
      var type = ticket.elements.type.value;
      var tif = ticket.elements.time_in_force;
      enable("price", withLimit.indexOf(type) >= 0);
      enable("stop_price", type === "stop" || type === "stop_limit");
      enable("trail_amount", type === "trailing_stop");
      enable("display_quantity", type === "limit");
      enable("post_only", type === "limit");
      if (immediateOnly.indexOf(type) >= 0 && tif.value !== "ioc" && tif.value !== "fok") {
        tif.value = "ioc";
      } else if (type === "market_to_limit" && (tif.value === "ioc" || tif.value === "fok")) {
        tif.value = "gtc";
      }
      enable("expire_at", tif.value === "gtd");
    };
    ticket.elements.time_in_force.addEventListener("change", syncTicket);
    ticket.elements.type.addEventListener("change", syncTicket);
    syncTicket();
  }

  var main = document.querySelector("main[data-ws-topics]");
  if (!main || !("WebSocket" in window)) return;
  var topics = main.getAttribute("data-ws-topics").split(/\s+/).filter(Boolean);
  if (!topics.length) return;
  var pageSymbol = main.getAttribute("data-symbol") || "";
  var pageAccount = main.getAttribute("data-account") || "";
  var tradeAccounts = (main.getAttribute("data-trade-accounts") || "").split(/\s+/);

  // -- helpers ------------------------------------------------------------------------

  /* Compare two non-negative decimal strings exactly (no float rounding). */
  function compareDecimal(a, b) {
    var pa = String(a).split("."), pb = String(b).split(".");
    var ia = pa[0].replace(/^0+/, ""), ib = pb[0].replace(/^0+/, "");
    if (ia.length !== ib.length) return ia.length < ib.length ? -1 : 1;
    if (ia !== ib) return ia < ib ? -1 : 1;
    var fa = pa[1] || "", fb = pb[1] || "";
    var width = Math.max(fa.length, fb.length);
    while (fa.length < width) fa += "0";
    while (fb.length < width) fb += "0";
    return fa === fb ? 0 : (fa < fb ? -1 : 1);
  }

  function isZero(text) { return /^0*(\.0*)?$/.test(String(text)); }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function setText(selector, text) {
    document.querySelectorAll(selector).forEach(function (el) { el.textContent = text; });
  }

  function removeEmptyRow(tbody) {
    var empty = tbody.querySelector("tr.empty");
    if (empty) empty.remove();
  }

  function ensureEmptyRow(tbody, text, colspan) {
    if (tbody.querySelector("tr:not(.empty)") || tbody.querySelector("tr.empty")) return;
    var tr = document.createElement("tr");
    tr.className = "empty";
    var td = cell(text);
    td.colSpan = colspan;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }

  function fillFields(row, values, format) {
    row.querySelectorAll("[data-field]").forEach(function (el) {
      var name = el.getAttribute("data-field");
      if (!(name in values)) return;
      el.textContent = format ? format(name, values) : (values[name] == null ? "" : values[name]);
    });
  }

  // -- book and L1 ------------------------------------------------------------------

  var book = { bids: {}, asks: {} };

  function loadBook(data) {
    book = { bids: {}, asks: {} };
    applyBook(data);
  }

  function applyBook(data) {
    ["bids", "asks"].forEach(function (side) {
      (data[side] || []).forEach(function (level) {
        if (isZero(level[1])) delete book[side][level[0]];
        else book[side][level[0]] = level;
      });
    });
    renderBook();
  }

  function sortedLevels(side) {
    var levels = Object.keys(book[side]).map(function (p) { return book[side][p]; });
    levels.sort(function (x, y) {
      var c = compareDecimal(x[0], y[0]);
      return side === "bids" ? -c : c;
    });
    return levels.slice(0, DEPTH);
  }

  function renderBook() {
    ["bids", "asks"].forEach(function (side) {
      var tbody = document.querySelector('tbody[data-book="' + side + '"]');
      var levels = sortedLevels(side);
      if (side === "bids") {
        setText('[data-l1="bid"]', levels.length ? levels[0][0] : "—");
        setText('[data-l1="bid_size"]', levels.length ? levels[0][1] : "");
      } else {
        setText('[data-l1="ask"]', levels.length ? levels[0][0] : "—");
        setText('[data-l1="ask_size"]', levels.length ? levels[0][1] : "");
      }
      if (!tbody) return;
      var rows = side === "asks" ? levels.slice().reverse() : levels;
      var fragment = document.createDocumentFragment();
      rows.forEach(function (level) {
        var tr = document.createElement("tr");
        tr.className = side === "bids" ? "bid" : "ask";
        tr.setAttribute("data-price", level[0]);
        tr.appendChild(cell(level[2], "num"));
        var quantity = cell(level[1], "num");
        quantity.setAttribute("data-field", "quantity");
        tr.appendChild(quantity);
        tr.appendChild(cell(level[0], "num price"));
        fragment.appendChild(tr);
      });
      tbody.replaceChildren(fragment);
      ensureEmptyRow(tbody, side === "bids" ? "No bids" : "No offers", 3);
    });
  }

  // -- trades -------------------------------------------------------------------------

  function tradeRow(trade) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-trade-id", trade.id);
    tr.appendChild(cell(String(trade.executed_at || "").slice(11, 19), "time"));
    tr.appendChild(cell(trade.price, "num"));
    tr.appendChild(cell(trade.quantity, "num"));
    var side = document.createElement("span");
    side.className = "side side-" + trade.aggressor_side;
    side.textContent = trade.aggressor_side;
    var td = cell("");
    td.appendChild(side);
    tr.appendChild(td);
    return tr;
  }

  function loadTrades(data) {
    var tbody = document.querySelector("tbody[data-trades]");
    var trades = data.trades || [];
    setText('[data-l1="last"]', trades.length ? trades[0].price : "—");
    if (!tbody) return;
    tbody.replaceChildren.apply(tbody, trades.slice(0, MAX_TRADES).map(tradeRow));
    ensureEmptyRow(tbody, "No trades yet", 4);
  }

  function addTrade(trade) {
    setText('[data-l1="last"]', trade.price);
    var tbody = document.querySelector("tbody[data-trades]");
    if (!tbody || tbody.querySelector('tr[data-trade-id="' + trade.id + '"]')) return;
    removeEmptyRow(tbody);
    var row = tradeRow(trade);
    row.classList.add("flash");
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.rows.length > MAX_TRADES) tbody.deleteRow(-1);
  }

  // -- orders ------------------------------------------------------------------------

  function orderText(name, order) {
    if (name === "created_at") return String(order.created_at || "").slice(11, 19);
    if (name === "type") return order.type + " " + order.time_in_force;
    if (name === "price") return order.price == null ? "market" : order.price;
    return order[name] == null ? "" : String(order[name]);
  }

  function updateOrderRow(row, order) {
    fillFields(row, order, orderText);
    var status = row.querySelector('[data-field="status"]');
    if (status) status.className = "status status-" + order.status;
    var side = row.querySelector('[data-field="side"]');
    if (side) side.className = "side side-" + order.side;
    var open = !TERMINAL[order.status];
    var mayCancel = open && tradeAccounts.indexOf(String(order.account)) >= 0;
    row.querySelectorAll("form.cancel").forEach(function (form) {
      if (!mayCancel) form.remove();
    });
  }

  function newOrderRow(tbody, order) {
    var template = document.getElementById(tbody.getAttribute("data-template") || "");
    if (!template) return null;
    var row = template.content.firstElementChild.cloneNode(true);
    row.setAttribute("data-order-id", order.id);
    row.setAttribute("data-account", order.account);
    row.querySelectorAll("form.cancel").forEach(function (form) {
      form.setAttribute("action", form.getAttribute("action").replace("/0/cancel/", "/" + order.id + "/cancel/"));
    });
    return row;
  }

  function applyOrder(order) {
    document.querySelectorAll("tbody[data-orders]").forEach(function (tbody) {
      var openOnly = tbody.hasAttribute("data-open-only");
      var isOpen = !TERMINAL[order.status];
      var row = tbody.querySelector('tr[data-order-id="' + order.id + '"]');
      if (row) {
        if (openOnly && !isOpen) {
          row.remove();
          ensureEmptyRow(tbody, tbody.getAttribute("data-empty") || "", 11);
        } else {
          updateOrderRow(row, order);
        }
        return;
      }
      var symbol = tbody.getAttribute("data-filter-symbol");
      var account = tbody.getAttribute("data-filter-account");
      if (symbol && symbol !== order.symbol) return;
      if (account && account !== String(order.account)) return;
      if (openOnly && !isOpen) return;
      // Only orders newer than those shown are new; older ones fell off the list.
      var first = tbody.querySelector("tr[data-order-id]");
      if (first && Number(first.getAttribute("data-order-id")) > order.id) return;
      row = newOrderRow(tbody, order);
      if (!row) return;
      updateOrderRow(row, order);
      removeEmptyRow(tbody);
      tbody.insertBefore(row, tbody.firstChild);
      while (tbody.rows.length > MAX_ORDERS && !openOnly) tbody.deleteRow(-1);
    });
  }

  /* The orders snapshot lists the open orders only: a row still shown as open but
   * missing from it has ended since the page was rendered (the update went by
   * before the subscription). Its final state comes from the REST API. */
  function refreshClosed(openIds) {
    var asked = {};
    document.querySelectorAll("tbody[data-orders] tr[data-order-id]").forEach(function (row) {
      var id = row.getAttribute("data-order-id");
      var status = row.querySelector('[data-field="status"]');
      if (openIds[id] || asked[id] || !status || TERMINAL[status.textContent.trim()]) return;
      asked[id] = true;
      if (!window.fetch) return;
      fetch("/api/v1/orders/" + encodeURIComponent(id), {
        credentials: "same-origin",
        headers: { Accept: "application/json" }
      })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (order) { if (order && order.id) applyOrder(order); })
        .catch(function () { /* the page stays as rendered */ });
    });
  }

  // -- balances and holdings -----------------------------------------------------------

  function applyPosition(kind, account, position) {
    if (pageAccount && String(account) !== pageAccount) return;
    var tbody = document.querySelector("tbody[data-" + kind + "]");
    if (!tbody) return;
    var attr = kind === "balances" ? "data-asset" : "data-holding";
    var key = kind === "balances" ? position.asset : position.symbol;
    var row = null;
    tbody.querySelectorAll("tr[" + attr + "]").forEach(function (tr) {
      if (tr.getAttribute(attr) === key) row = tr;
    });
    if (kind === "holdings" && isZero(position.quantity)) {
      if (row) row.remove();
      ensureEmptyRow(tbody, "No holdings.", 5);
      return;
    }
    if (!row) {
      var template = document.getElementById(kind === "balances" ? "balance-row" : "holding-row");
      if (!template) return;
      row = template.content.firstElementChild.cloneNode(true);
      row.setAttribute(attr, key);
      removeEmptyRow(tbody);
      tbody.appendChild(row);
    }
    fillFields(row, position);
  }

  // -- the socket ----------------------------------------------------------------------

  var socket = null;
  var retries = 0;
  var pinger = null;
  var seqs = {};          // topic -> seq, or (private topics) {account: seq}
  var resyncing = {};     // topic -> true while a fresh snapshot is awaited
  var awaiting = {};      // topics without their first snapshot yet
  var live = document.getElementById("live");

  function setLive(state, text) {
    if (!live) return;
    live.hidden = false;
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function resubscribe(topic) {
    if (resyncing[topic]) return;
    resyncing[topic] = true;
    send({ op: "subscribe", topics: [topic] });
  }

  function onSnapshot(message) {
    var topic = message.topic;
    var kind = topic.split(".")[0];
    delete resyncing[topic];
    if (message.seqs) seqs[topic] = Object.assign({}, message.seqs);
    else seqs[topic] = message.seq;
    var data = message.data;
    if (kind === "book") loadBook(data);
    else if (kind === "trades") loadTrades(data);
    else if (kind === "market") applyMarket(data);
    else if (kind === "orders") {
      var open = {};
      data.forEach(function (order) { open[order.id] = true; applyOrder(order); });
      refreshClosed(open);
    } else if (kind === "balances" || kind === "holdings") {
      data.forEach(function (position) { applyPosition(kind, position.account, position); });
    }
    delete awaiting[topic];
    if (!Object.keys(awaiting).length) setLive("live", "live");
  }

  function onUpdate(message) {
    var topic = message.topic;
    if (resyncing[topic] || !(topic in seqs)) return;
    var private_ = typeof seqs[topic] === "object";
    var last = private_ ? seqs[topic][String(message.account)] : seqs[topic];
    if (last === undefined) { resubscribe(topic); return; }
    if (message.seq <= last) return;
    if (message.seq !== last + 1) { resubscribe(topic); return; }
    if (private_) seqs[topic][String(message.account)] = message.seq;
    else seqs[topic] = message.seq;
    var kind = topic.split(".")[0];
    var data = message.data;
    if (kind === "book") applyBook(data);
    else if (kind === "trades") addTrade(data);
    else if (kind === "market") applyMarket(data);
    else if (kind === "orders") applyOrder(data);
    else if (kind === "balances" || kind === "holdings") applyPosition(kind, message.account, data);
  }

  /* A heartbeat names each topic's last committed seq: above ours, an update was
     lost (on a quiet topic nothing else would show it), so resubscribe. */
  function onHeartbeat(message) {
    var last = message.last_seq || {};
    Object.keys(last).forEach(function (topic) {
      if (typeof seqs[topic] === "number" && last[topic] > seqs[topic]) resubscribe(topic);
    });
    var lasts = message.last_seqs || {};
    Object.keys(lasts).forEach(function (topic) {
      var mine = seqs[topic];
      if (typeof mine !== "object") return;
      Object.keys(lasts[topic]).forEach(function (key) {
        if (lasts[topic][key] > (mine[key] || 0)) resubscribe(topic);
      });
    });
  }

  function applyMarket(market) {
    document.querySelectorAll('[data-market="' + market.code + '"] [data-field="state"]').forEach(function (el) {
      el.textContent = market.state;
      el.className = "state state-" + market.state;
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/v1/");
    socket.onopen = function () {
      retries = 0;
      seqs = {};
      resyncing = {};
      awaiting = {};
      topics.forEach(function (topic) { awaiting[topic] = true; });
      setLive("connecting", "connecting");
      send({ op: "subscribe", topics: topics });
      pinger = setInterval(function () { send({ op: "ping" }); }, 25000);
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.type === "snapshot") onSnapshot(message);
      else if (message.type === "update") onUpdate(message);
      else if (message.type === "heartbeat") onHeartbeat(message);
      else if (message.type === "error") {
        if (window.console) console.warn("stream error", message.code, message.message);
        if (message.code === "unauthorized" || message.code === "unknown_topic") {
          // Such a topic will never snapshot: do not wait for it.
          awaiting = {};
          setLive("live", "live");
        }
      }
    };
    socket.onclose = function () {
      clearInterval(pinger);
      setLive("offline", "offline");
      var delay = Math.min(15000, 500 * Math.pow(2, retries++));
      setTimeout(connect, delay);
    };
  }

  connect();
})();
