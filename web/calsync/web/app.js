// calsync web calendar: one department's month, live over the WebSocket.
// Plain JavaScript on the browser's own fetch and WebSocket; nothing is fetched from elsewhere.
"use strict";

const TEXT = {
  ko: {
    department: "부서", today: "오늘", previous: "이전 달", next: "다음 달", token: "토큰", saveToken: "저장",
    tokenHelp: "이 서버는 토큰이 있어야 볼 수 있습니다. 관리자에게 받은 토큰을 넣어 주세요. 이 브라우저에 보관됩니다.",
    date: "날짜", title: "제목", time: "시간", description: "설명", url: "링크", save: "저장", delete: "삭제",
    new: "새 일정", newEvent: "새 일정", editEvent: "일정 고치기", readOnly: "읽기 전용입니다: 이 토큰으로는 일정을 바꿀 수 없습니다.",
    conflict: "다른 사용자가 이 일정을 먼저 고쳤습니다. 최신 내용을 불러오거나, 내 내용으로 덮어쓸 수 있습니다.",
    reload: "최신 내용 불러오기", overwrite: "내 내용으로 덮어쓰기", online: "실시간 연결됨", connecting: "연결 중…",
    offline: "연결 끊김: 다시 연결하는 중…", noDepartments: "볼 수 있는 부서가 없습니다.", saved: "저장했습니다.",
    deleted: "삭제했습니다.", confirmDelete: "이 일정을 삭제할까요?", weekdays: ["일", "월", "화", "수", "목", "금", "토"],
    month: (y, m) => `${y}년 ${m}월`, more: (n) => `외 ${n}개`,
    skip: "일정 편집으로 건너뛰기", monthNav: "달 이동", editorLabel: "일정 편집", timePlaceholder: "오후 2시 ~ 오후 3시",
    manageDepartments: "부서 관리", newDepartment: "새 부서", create: "만들기", renameDepartment: "이 부서의 이름",
    rename: "이름 바꾸기", deleteDepartment: "부서 삭제", departmentCreated: "부서를 만들었습니다.",
    departmentRenamed: "부서 이름을 바꿨습니다.", departmentDeleted: "부서를 삭제했습니다.",
    confirmDeleteDepartment: (name) => `'${name}' 부서와 그 일정을 모두 삭제할까요?`,
    openLink: "링크 열기", agenda: "이달의 일정", noEvents: "이달에는 일정이 없습니다.", allDay: "종일",
    dayLabel: (date) => `${date.getDate()}, ${date.toLocaleDateString("ko", {year: "numeric", month: "long", day: "numeric", weekday: "long"})}, 새 일정`,
    agendaDay: (date) => date.toLocaleDateString("ko", {month: "long", day: "numeric", weekday: "short"}),
  },
  en: {
    department: "Department", today: "Today", previous: "Previous month", next: "Next month", token: "Token",
    saveToken: "Save", tokenHelp: "This server needs a token. Paste the one you were given; it is kept in this browser.",
    date: "Date", title: "Title", time: "Time", description: "Description", url: "Link", save: "Save",
    delete: "Delete", new: "New event", newEvent: "New event", editEvent: "Edit event",
    readOnly: "Read only: this token cannot change events.",
    conflict: "Someone changed this event first. Load their version, or overwrite it with yours.",
    reload: "Load latest", overwrite: "Overwrite with mine", online: "Live", connecting: "Connecting…",
    offline: "Disconnected: reconnecting…", noDepartments: "No department to show.", saved: "Saved.",
    deleted: "Deleted.", confirmDelete: "Delete this event?", weekdays: ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"],
    month: (y, m) => new Date(y, m - 1, 1).toLocaleDateString("en", {year: "numeric", month: "long"}),
    more: (n) => `${n} more`,
    skip: "Skip to the event form", monthNav: "Month", editorLabel: "Event", timePlaceholder: "2:00 PM - 3:00 PM",
    manageDepartments: "Departments", newDepartment: "New department", create: "Create",
    renameDepartment: "This department's name", rename: "Rename", deleteDepartment: "Delete department",
    departmentCreated: "Department created.", departmentRenamed: "Department renamed.",
    departmentDeleted: "Department deleted.",
    confirmDeleteDepartment: (name) => `Delete the department '${name}' and all its events?`,
    openLink: "Open link", agenda: "This month", noEvents: "No events this month.", allDay: "All day",
    dayLabel: (date) => `${date.getDate()}, ${date.toLocaleDateString("en", {year: "numeric", month: "long", day: "numeric", weekday: "long"})}, new event`,
    agendaDay: (date) => date.toLocaleDateString("en", {month: "long", day: "numeric", weekday: "short"}),
  },
};
const LANG = (navigator.language || "ko").toLowerCase().startsWith("ko") ? "ko" : "en";
const T = TEXT[LANG];
const TOKEN_KEY = "calsync.token";
const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  departments: [],
  departmentId: null,
  month: null,            // {year, month} (month 1-12)
  events: new Map(),      // id -> event, for the department followed
  cursor: null,           // {epoch, seq} of the copy
  canWrite: true,
  editing: null,          // the event in the form, or null for a new one
  idempotencyKey: null,   // kept for one new event's submission, so a retry never makes two
  pending: null,          // the PUT body refused with 412, for "overwrite"
  socket: null,
  delay: 500,
  focusDate: null,        // the one day button in the Tab order (arrow keys move it)
};

// -- URL and token -------------------------------------------------------------------------
function readLocation() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    saveToken(params.get("token"));
    params.delete("token");  // not left in the address bar or history
  }
  const month = /^(\d{4})-(\d{2})$/.exec(params.get("month") || "");
  const now = new Date();
  state.month = month ? {year: +month[1], month: +month[2]} : {year: now.getFullYear(), month: now.getMonth() + 1};
  state.departmentId = params.get("department");
  writeLocation();
}

function writeLocation() {
  const params = new URLSearchParams();
  if (state.departmentId) params.set("department", state.departmentId);
  params.set("month", `${state.month.year}-${String(state.month.month).padStart(2, "0")}`);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function saveToken(token) {
  state.token = token.trim();
  localStorage.setItem(TOKEN_KEY, state.token);
}

function tokenClaims() {
  try {
    const payload = state.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(payload))));
  } catch (error) {
    return null;
  }
}

function mayWrite(departmentId) {
  if (!state.token) return true;  // auth off: the server decides anyway
  const claims = tokenClaims();
  if (!claims) return false;
  if (claims.role === "admin") return true;
  const departments = claims.departments;
  return claims.role === "write" && (departments === "*" || (Array.isArray(departments) && departments.includes(departmentId)));
}

function mayAdmin() {
  if (!state.token) return true;  // auth off: anyone may manage departments, as with the API
  const claims = tokenClaims();
  return Boolean(claims && claims.role === "admin");
}

// -- REST ----------------------------------------------------------------------------------
async function api(method, path, body, headers = {}) {
  const init = {method, headers: {...headers}};
  if (state.token) init.headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = response.status === 204 ? {} : await response.json();
  if (response.status === 401) askForToken();
  return {status: response.status, body: answer};
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -- the department's events, kept in step with the feed ----------------------------------
function apply(event) {
  const known = state.events.get(event.id);
  if (!known || known.seq < event.seq) state.events.set(event.id, event);
}

function takeAnswer(data) {
  if (data.reset) state.events.clear();
  data.events.forEach(apply);
  data.deleted.forEach((gone) => state.events.delete(gone.id));
  state.cursor = {epoch: data.epoch, seq: data.seq};
  render();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  state.socket = socket;
  const send = (event, data, id) => socket.send(JSON.stringify({event, data, id}));
  setConnection("connecting");
  socket.onopen = () => {
    if (state.token) send("auth", {token: state.token}, "auth");
    else setConnection("online");
    join();
  };
  socket.onmessage = (message) => {
    const {event, data, id} = JSON.parse(message.data);
    if (event === "joined_department" || event === "sync_response") {
      if (data.department_id && data.department_id !== state.departmentId) return;
      state.delay = 500;
      setConnection("online");
      return takeAnswer(data);
    }
    if (event === "authenticated") {
      state.delay = 500;
      return setConnection("online");
    }
    if (event === "error") {
      if (id === "join" || id === "auth") showMessage(data.message);
      if (data.code === "unauthorized") askForToken();
      return;
    }
    if (event === "department_created" || event === "department_updated" || event === "department_deleted") {
      return loadDepartments();
    }
    if (!state.cursor || data.department_id !== state.departmentId) return;
    if (event === "event_created" || event === "event_updated") apply(data);
    else if (event === "event_deleted") state.events.delete(data.id);
    else return;
    state.cursor.seq = Math.max(state.cursor.seq, data.seq);
    render();
  };
  socket.onclose = (closed) => {
    if (state.socket !== socket) return;  // replaced on purpose
    setConnection("offline");
    if (closed.code === 4401) askForToken();
    setTimeout(connect, state.delay + Math.random() * state.delay);
    state.delay = Math.min(state.delay * 2, 10000);
  };
}

function join() {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || !state.departmentId) return;
  const cursor = state.cursor || {seq: 0, epoch: ""};  // "" matches no epoch: the first load is a reset
  socket.send(JSON.stringify({event: "join_department", id: "join",
                              data: {department_id: state.departmentId, since: cursor.seq, epoch: cursor.epoch}}));
}

function follow(departmentId) {
  const socket = state.socket;
  if (socket && socket.readyState === WebSocket.OPEN && state.departmentId) {
    socket.send(JSON.stringify({event: "leave_department", data: {department_id: state.departmentId}}));
  }
  state.departmentId = departmentId;
  state.events = new Map();
  state.cursor = null;
  state.canWrite = mayWrite(departmentId);
  writeLocation();
  startNew(today());
  render();
  join();
}

// -- what is shown ------------------------------------------------------------------------
function setConnection(kind) {
  const badge = $("connection");
  badge.dataset.state = kind;
  badge.textContent = T[kind];
}

function showMessage(text, kind = "error") {
  $("message").textContent = text || "";
  $("message").dataset.kind = kind;
}

function askForToken() {
  $("token-panel").hidden = false;
  $("token-input").focus();
}

function iso(year, month, day) {
  return `${year}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`;
}

function today() {
  const now = new Date();
  return iso(now.getFullYear(), now.getMonth() + 1, now.getDate());
}

// -- clock times: calsync.server.clocktime, as the .ics feed reads them --------------------
// The same grammar as the server's (tests/test_webapp.py compares the two on a table of
// times): "14:00", "2:00 PM", "오후 2시 반", "오후 2시 ~ 3시", ...; anything else is no clock time.
const CLOCK = (p) => `(?:(?<${p}ko>오전|오후)\\s*)?(?<${p}h>\\d{1,2})(?:\\s*:\\s*(?<${p}m>\\d{2})(?:\\s*시)?` +
  `|\\s*(?<${p}si>시)(?:\\s*(?:(?<${p}km>\\d{1,2})\\s*분|(?<${p}half>반)))?)?(?:\\s*(?<${p}en>[ap])\\.?\\s*m\\.?)?`;
const READING = new RegExp(`^\\s*${CLOCK("s")}(?:\\s*(?:-|~|–|—|부터|to)\\s*${CLOCK("e")}(?:\\s*까지)?)?\\s*$`, "i");

function clockSide(groups, p, inherited) {
  const hourText = groups[`${p}h`];
  let hour = Number(hourText);
  const minuteText = groups[`${p}m`] || groups[`${p}km`];
  const minute = groups[`${p}half`] ? 30 : Number(minuteText || 0);
  const korean = groups[`${p}ko`], english = groups[`${p}en`];
  if (korean && english) return null;
  let half = {"오전": "am", "오후": "pm"}[korean || ""] || (english ? `${english.toLowerCase()}m` : null);
  const hasClock = groups[`${p}m`] !== undefined || groups[`${p}si`] !== undefined;
  if (half === null && !hasClock && p === "s") return null;
  half = half || (hour <= 12 ? inherited : null);
  if (minute > 59) return null;
  if (half) {
    if (hour < 1 || hour > 12) return null;
    hour = hour % 12 + (half === "pm" ? 12 : 0);
  } else if (hour > 23) {
    return null;
  }
  return {minutes: hour * 60 + minute, half};
}

/** Minutes after midnight of the start `text` names ({start, end}), or null: no clock time. */
function clockTime(text) {
  const match = READING.exec(text || "");
  if (!match) return null;
  const start = clockSide(match.groups, "s", null);
  if (!start) return null;
  if (match.groups.eh === undefined) return {start: start.minutes, end: null};
  const end = clockSide(match.groups, "e", start.half);
  if (!end || end.minutes <= start.minutes) return null;
  return {start: start.minutes, end: end.minutes};
}

/** A day's order: all-day events first, then by the clock time they name, then as typed, then oldest first. */
function byTime(a, b) {
  return startOf(a) - startOf(b) || (a.time || "").localeCompare(b.time || "") || a.created_at.localeCompare(b.created_at);
}

const STARTS = new WeakMap();  // event -> minutes (-1: no clock time); an update is a new object

function startOf(event) {
  if (!STARTS.has(event)) {
    const clock = clockTime(event.time);
    STARTS.set(event, clock ? clock.start : -1);
  }
  return STARTS.get(event);
}

// -- the month: a grid, and on small screens a list --------------------------------------
function dateOf(text) {
  const [year, month, day] = text.split("-").map(Number);
  return new Date(year, month - 1, day);
}

function inMonth(date) {
  return date.startsWith(`${state.month.year}-${String(state.month.month).padStart(2, "0")}-`);
}

function render() {
  const {year, month} = state.month;
  // From the token and the department, whichever answer came first: the WebSocket's join
  // may fill the month before the department list arrives.
  state.canWrite = mayWrite(state.departmentId);
  $("month-label").textContent = T.month(year, month);
  const byDay = new Map();
  for (const event of state.events.values()) {
    if (!byDay.has(event.event_date)) byDay.set(event.event_date, []);
    byDay.get(event.event_date).push(event);
  }
  for (const events of byDay.values()) events.sort(byTime);
  if (!state.focusDate || !inMonth(state.focusDate)) state.focusDate = inMonth(today()) ? today() : iso(year, month, 1);
  renderGrid(byDay);
  renderAgenda(byDay);
  renderAdmin();
  $("event-form").hidden = !state.canWrite;
  $("read-only").hidden = state.canWrite;
}

function renderGrid(byDay) {
  const {year, month} = state.month;
  const first = new Date(year, month - 1, 1);
  const start = new Date(year, month - 1, 1 - first.getDay());
  const weeks = $("weeks");
  weeks.replaceChildren();
  for (let week = 0; week < 6; week++) {
    const row = document.createElement("tr");
    for (let weekday = 0; weekday < 7; weekday++) {
      const day = new Date(start.getFullYear(), start.getMonth(), start.getDate() + week * 7 + weekday);
      const date = iso(day.getFullYear(), day.getMonth() + 1, day.getDate());
      const events = byDay.get(date) || [];
      const cell = document.createElement("td");
      cell.dataset.date = date;
      if (day.getMonth() !== month - 1) cell.classList.add("outside");
      if (date === today()) cell.classList.add("today");
      const number = document.createElement("button");
      number.type = "button";
      number.className = "day";
      number.dataset.date = date;
      number.textContent = day.getDate();
      number.setAttribute("aria-label", T.dayLabel(day));  // starts with the number shown
      number.tabIndex = date === state.focusDate ? 0 : -1;
      number.addEventListener("click", () => { state.focusDate = date; startNew(date); });
      cell.append(number);
      if (events.length) {
        const count = document.createElement("span");
        count.className = "count";
        count.setAttribute("aria-hidden", "true");
        count.textContent = `• ${events.length}`;
        cell.append(count);
      }
      const list = document.createElement("ul");
      for (const event of events) {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "event";
        button.dataset.id = event.id;
        button.textContent = event.title;
        if (event.time) {
          const when = document.createElement("span");
          when.className = "time";
          when.textContent = event.time;
          button.append(when);
        }
        button.title = event.time ? `${event.title} (${event.time})` : event.title;
        button.addEventListener("click", () => startEdit(event.id));
        item.append(button);
        list.append(item);
      }
      cell.append(list);
      row.append(cell);
    }
    weeks.append(row);
  }
}

/** Arrow keys, Home/End and PageUp/PageDown move among the days; the grid is one Tab stop. */
function moveFocus(event) {
  const target = event.target.closest(".day");
  if (!target) return;
  const steps = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -7, ArrowDown: 7};
  const date = dateOf(target.dataset.date);
  let next;
  if (event.key in steps) next = new Date(date.getFullYear(), date.getMonth(), date.getDate() + steps[event.key]);
  else if (event.key === "Home") next = new Date(date.getFullYear(), date.getMonth(), date.getDate() - date.getDay());
  else if (event.key === "End") next = new Date(date.getFullYear(), date.getMonth(), date.getDate() + 6 - date.getDay());
  else if (event.key === "PageUp" || event.key === "PageDown") {
    next = new Date(date.getFullYear(), date.getMonth() + (event.key === "PageUp" ? -1 : 1), 1);
  } else return;
  event.preventDefault();
  state.focusDate = iso(next.getFullYear(), next.getMonth() + 1, next.getDate());
  if (!inMonth(state.focusDate)) {
    state.month = {year: next.getFullYear(), month: next.getMonth() + 1};
    writeLocation();
  }
  render();
  document.querySelector(`.day[data-date="${state.focusDate}"]`).focus();
}

function renderAgenda(byDay) {
  const days = [...byDay.keys()].filter(inMonth).sort();
  $("agenda-empty").hidden = days.length > 0;
  $("agenda-days").replaceChildren(...days.map((date) => {
    const item = document.createElement("li");
    const heading = document.createElement("h3");
    heading.textContent = T.agendaDay(dateOf(date));
    const list = document.createElement("ul");
    for (const event of byDay.get(date)) {
      const entry = document.createElement("li");
      entry.className = "agenda-event";
      entry.dataset.id = event.id;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = event.time || T.allDay;
      const title = document.createElement("button");
      title.type = "button";
      title.textContent = event.title;
      title.addEventListener("click", () => startEdit(event.id));
      entry.append(when, title);
      if (event.description) {
        const details = document.createElement("p");
        details.className = "details";
        details.textContent = event.description;
        entry.append(details);
      }
      const link = safeLink(event.url);
      if (link) entry.append(link);
      list.append(entry);
    }
    item.append(heading, list);
    return item;
  }));
}

/** An event's `url` as a link that opens apart from this page, or null (only http and https). */
function isWebUrl(url) {
  return /^https?:\/\//i.test(url || "");
}

function safeLink(url) {
  if (!isWebUrl(url)) return null;
  const link = document.createElement("a");
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.textContent = url;
  return link;
}

function renderAdmin() {
  const department = state.departments.find((d) => d.id === state.departmentId);
  $("department-admin").hidden = !mayAdmin();
  $("department-rename").hidden = !department;
  if (department && document.activeElement !== $("department-name")) $("department-name").value = department.name;
}

// -- the form -----------------------------------------------------------------------------
const FIELDS = ["event_date", "title", "time", "description", "url"];
const input = (field) => $(`event-${field === "event_date" ? "date" : field}`);

function fillForm(event) {
  for (const field of FIELDS) input(field).value = event[field] || "";
  showLink();
}

function showLink() {
  const link = $("event-link");
  const url = input("url").value.trim();
  link.hidden = !isWebUrl(url);
  if (!link.hidden) link.href = url;
}

function formValues() {
  return Object.fromEntries(FIELDS.map((field) => [field, input(field).value]));
}

function startNew(date) {
  state.editing = null;
  state.idempotencyKey = newKey();
  state.pending = null;
  $("conflict").hidden = true;
  fillForm({event_date: date});
  $("form-title").textContent = T.newEvent;
  $("delete").hidden = true;
  if (state.canWrite && document.activeElement && document.activeElement.classList.contains("day")) input("title").focus();
}

function startEdit(id) {
  const event = state.events.get(id);
  if (!event) return;
  state.focusDate = inMonth(event.event_date) ? event.event_date : state.focusDate;
  state.editing = event;
  state.pending = null;
  $("conflict").hidden = true;
  fillForm(event);
  $("form-title").textContent = T.editEvent;
  $("delete").hidden = false;
  if (state.canWrite) input("title").focus();
}

function explain(answer) {
  const fields = answer.body.errors ? Object.values(answer.body.errors).flat().join(" ") : "";
  showMessage(`${answer.body.message || answer.status}${fields ? ` (${fields})` : ""}`);
}

async function save(overwrite = false) {
  const values = formValues();
  let answer;
  if (state.editing) {
    const headers = overwrite ? {} : {"If-Match": `"${state.editing.version}"`};
    answer = await api("PUT", `/api/events/${encodeURIComponent(state.editing.id)}`, values, headers);
  } else {
    answer = await api("POST", `/api/events/${encodeURIComponent(state.departmentId)}`, values,
                       {"Idempotency-Key": state.idempotencyKey});
  }
  if (answer.status === 412) {
    state.pending = values;
    state.editing = answer.body.event;
    apply(answer.body.event);
    showMessage("");  // an older "saved" must not stand beside the conflict
    $("conflict").hidden = false;
    $("conflict-reload").focus();
    render();
    return;
  }
  if (answer.status >= 400) return explain(answer);
  apply(answer.body.event);
  render();
  showMessage(T.saved, "info");
  if (state.editing) startEdit(answer.body.event.id);
  else startNew(values.event_date);
}

async function remove() {
  if (!state.editing || !confirm(T.confirmDelete)) return;
  const answer = await api("DELETE", `/api/events/${encodeURIComponent(state.editing.id)}`, undefined,
                           {"If-Match": `"${state.editing.version}"`});
  if (answer.status === 412) {
    state.editing = answer.body.event;
    apply(answer.body.event);
    showMessage("");
    $("conflict").hidden = false;
    render();
    return;
  }
  if (answer.status >= 400) return explain(answer);
  state.events.delete(state.editing.id);
  render();
  showMessage(T.deleted, "info");
  startNew(state.editing.event_date);
}

// -- departments --------------------------------------------------------------------------
async function loadDepartments() {
  const answer = await api("GET", "/api/departments");
  if (answer.status !== 200) return explain(answer);
  state.departments = answer.body.departments;
  const select = $("department");
  select.replaceChildren(...state.departments.map((department) => new Option(department.name, department.id)));
  if (!state.departments.length) {
    state.departmentId = null;
    state.events = new Map();
    state.cursor = null;
    render();
    showMessage(T.noDepartments);
    return;
  }
  const wanted = state.departments.some((d) => d.id === state.departmentId) ? state.departmentId : state.departments[0].id;
  select.value = wanted;
  if (wanted !== state.departmentId || !state.cursor) follow(wanted);
  else renderAdmin();
}

async function createDepartment() {
  const name = $("new-department-name").value;
  const answer = await api("POST", "/api/departments", {name}, {"Idempotency-Key": newKey()});
  if (answer.status !== 201) return explain(answer);
  $("new-department-name").value = "";
  state.departmentId = answer.body.department.id;
  state.cursor = null;
  showMessage(T.departmentCreated, "info");
  await loadDepartments();
}

async function renameDepartment() {
  const answer = await api("PUT", `/api/departments/${encodeURIComponent(state.departmentId)}`,
                           {name: $("department-name").value});
  if (answer.status !== 200) return explain(answer);
  $("department-name").blur();
  showMessage(T.departmentRenamed, "info");
  await loadDepartments();
}

async function deleteDepartment() {
  const department = state.departments.find((d) => d.id === state.departmentId);
  if (!department || !confirm(T.confirmDeleteDepartment(department.name))) return;
  const answer = await api("DELETE", `/api/departments/${encodeURIComponent(department.id)}`);
  if (answer.status !== 200) return explain(answer);
  showMessage(T.departmentDeleted, "info");
  await loadDepartments();
}

function moveMonth(step) {
  const date = new Date(state.month.year, state.month.month - 1 + step, 1);
  state.month = {year: date.getFullYear(), month: date.getMonth() + 1};
  writeLocation();
  render();
}

// -- start ----------------------------------------------------------------------------------
function labels() {
  document.documentElement.lang = LANG;
  document.querySelectorAll("[data-text]").forEach((node) => { node.textContent = T[node.dataset.text]; });
  document.querySelectorAll("[data-label]").forEach((node) => { node.setAttribute("aria-label", T[node.dataset.label]); });
  document.querySelectorAll("[data-placeholder]").forEach((node) => { node.placeholder = T[node.dataset.placeholder]; });
  $("weekdays").replaceChildren(...T.weekdays.map((name) => {
    const cell = document.createElement("th");
    cell.scope = "col";
    cell.textContent = name;
    return cell;
  }));
}

function wire() {
  $("department").addEventListener("change", (e) => follow(e.target.value));
  $("previous").addEventListener("click", () => moveMonth(-1));
  $("next").addEventListener("click", () => moveMonth(1));
  $("today").addEventListener("click", () => {
    const now = new Date();
    state.month = {year: now.getFullYear(), month: now.getMonth() + 1};
    writeLocation();
    render();
  });
  $("weeks").addEventListener("keydown", moveFocus);
  $("event-url").addEventListener("input", showLink);
  $("department-create").addEventListener("submit", (e) => { e.preventDefault(); createDepartment(); });
  $("department-rename").addEventListener("submit", (e) => { e.preventDefault(); renameDepartment(); });
  $("department-delete").addEventListener("click", deleteDepartment);
  $("event-form").addEventListener("submit", (e) => { e.preventDefault(); save(); });
  $("delete").addEventListener("click", remove);
  $("new").addEventListener("click", () => startNew(today()));
  $("conflict-reload").addEventListener("click", () => startEdit(state.editing.id));
  $("conflict-overwrite").addEventListener("click", () => {
    fillForm(state.pending || formValues());
    $("conflict").hidden = true;
    save(true);
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    saveToken($("token-input").value);
    $("token-panel").hidden = true;
    showMessage("");
    if (state.socket) state.socket.close();  // reconnects with the new token
    loadDepartments();
  });
}

labels();
wire();
readLocation();
render();
connect();
loadDepartments();
