// The GoCare voice playground: a browser client of the app protocol (docs/protocol.md, docs/playground.md).
// It does what the Flutter app does: a token from /api/token, a LiveKit room, the welcome packet on topic
// "gocare", commands as RPC on the agent participant, push-to-talk turns, lk.chat, lk.transcription, and
// recorded messages to /voice/upload. No build step: plain ES module, the livekit-client UMD build as the
// global LivekitClient (loaded by the page, pinned, with its integrity hash).

const LK = globalThis.LivekitClient;
const config = document.body.dataset;
const params = new URLSearchParams(location.search);
const TOPIC = 'gocare';
const AGENT_TIMEOUT_S = seconds(params.get('agent_timeout'), 20);
const RPC_TIMEOUT_MS = 10000;
const MAX_PROTOCOL_ENTRIES = 300;

const $ = (id) => document.getElementById(id);
const state = {
  room: null,
  agent: null, // the agent participant
  roomName: null,
  bearer: null,
  mode: null,
  agentTimer: null,
  ptt: Promise.resolve(), // push-to-talk steps, one after another
  pttHeld: false,
  recording: null,
  meter: null,
  segments: new Map(), // lk.segment_id -> transcript line
};

function seconds(value, fallback) {
  const n = Number(value);
  return Number.isFinite(n) && n > 0 && n <= 600 ? n : fallback;
}

// --- showing things -------------------------------------------------------------------------------------
function showError(text) {
  const box = $('error');
  box.textContent = text;
  box.hidden = !text;
}

function setText(id, text) {
  $(id).textContent = text;
}

function logProtocol(direction, kind, detail, body) {
  const list = $('protocol');
  const item = document.createElement('li');
  item.className = direction === 'out' ? 'out' : 'in';
  const head = document.createElement('span');
  head.className = 'head';
  head.textContent = `${new Date().toLocaleTimeString()} ${direction === 'out' ? '→' : '←'} ${kind} ${detail}`;
  const pre = document.createElement('pre');
  pre.textContent = typeof body === 'string' ? body : JSON.stringify(body, null, 1);
  item.append(head, pre);
  list.prepend(item);
  while (list.children.length > MAX_PROTOCOL_ENTRIES) list.lastChild.remove();
}

function transcriptLine(key, who, text) {
  const list = $('transcript');
  const following = list.scrollTop + list.clientHeight >= list.scrollHeight - 24;
  let line = key ? state.segments.get(key) : null;
  if (!line) {
    line = document.createElement('li');
    line.className = who === 'agent' ? 'agent' : 'user';
    const speaker = document.createElement('span');
    speaker.className = 'who';
    speaker.textContent = who === 'agent' ? 'Agent' : who === 'chat' ? 'You (chat)' : 'You';
    const words = document.createElement('span');
    words.className = 'text';
    line.append(speaker, words);
    list.append(line);
    if (key) state.segments.set(key, line);
  }
  line.querySelector('.text').textContent = text;
  if (following) list.scrollTop = list.scrollHeight; // the list follows the call unless scrolled back
}

function showAnswer(method, answer) {
  $('answer').textContent = `${method}: ${JSON.stringify(answer)}`;
  if (answer && answer.ok) {
    if (method === 'switch_agent' || answer.command === 'switch_agent') setMode(answer.agent);
    if (answer.command === 'start_conversation' && answer.agent) setMode(answer.agent);
  }
}

function setMode(mode) {
  const previous = state.mode;
  state.mode = mode || null;
  setText('mode', state.mode || 'unknown');
  for (const button of document.querySelectorAll('[data-agent]')) {
    button.setAttribute('aria-pressed', String(button.dataset.agent === state.mode));
  }
  $('ptt').disabled = !(state.room && state.mode === 'click_to_talk');
  // push-to-talk: the microphone is open only while the button is held
  if (state.mode === 'click_to_talk' && previous !== 'click_to_talk') setMicrophone(false);
}

function setInCall(inCall) {
  document.body.dataset.inCall = String(inCall);
  for (const element of document.querySelectorAll('.in-call')) element.disabled = !inCall;
  $('chat-text').disabled = !inCall;
  $('join').disabled = inCall;
  $('leave').disabled = !inCall;
  for (const id of ['bearer', 'identity', 'name', 'room', 'mic-on-join']) $(id).disabled = inCall;
  $('ptt').disabled = !(inCall && state.mode === 'click_to_talk');
}

// --- the token service ----------------------------------------------------------------------------------
function authHeaders() {
  return state.bearer ? { Authorization: `Bearer ${state.bearer}` } : {};
}

async function refusal(response, what) {
  let error = 'http_error';
  let detail = response.statusText;
  try {
    const body = await response.json();
    error = body.error || error;
    detail = body.detail || detail;
  } catch (_) { /* not JSON: keep the status text */ }
  return `${what} refused (${response.status} ${error}): ${detail}`;
}

async function fetchToken() {
  const body = { room_config: {} }; // what the Flutter TokenSource sends
  const room = $('room').value.trim();
  const identity = $('identity').value.trim();
  const name = $('name').value.trim();
  if (room) body.room_name = room;
  if (identity && config.authMode !== 'jwt') body.participant_identity = identity;
  if (name) body.participant_name = name;
  logProtocol('out', 'HTTP', 'POST /api/token', body);
  let response;
  try {
    response = await fetch('api/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new Error(`The token service could not be reached: ${error.message}`);
  }
  if (!response.ok) {
    const text = await refusal(response, 'The token request was');
    logProtocol('in', 'HTTP', `${response.status} /api/token`, text);
    throw new Error(text);
  }
  const data = await response.json();
  logProtocol('in', 'HTTP', `${response.status} /api/token`,
    { ...data, participant_token: '(a LiveKit token, not shown)' });
  return data;
}

// --- joining and leaving --------------------------------------------------------------------------------
async function join(event) {
  event.preventDefault();
  showError('');
  if (!LK) {
    showError(`The LiveKit browser SDK did not load from ${config.sdkUrl}. Offline, or its integrity hash ` +
      'did not match? Set GOCARE_PLAYGROUND_SDK_URL (and GOCARE_PLAYGROUND_SDK_SRI) on the token service.');
    return;
  }
  state.bearer = config.authMode === 'jwt' ? $('bearer').value.trim() : null;
  $('join').disabled = true;
  let token;
  try {
    token = await fetchToken();
  } catch (error) {
    $('join').disabled = false;
    showError(error.message);
    return;
  }
  const room = new LK.Room({
    adaptiveStream: false,
    dynacast: false,
    // a muted microphone is stopped, not just silenced: the browser's recording indicator goes off, and
    // turning it on again opens the device afresh
    publishDefaults: { stopMicTrackOnMute: true },
  });
  state.room = room;
  state.roomName = token.room_name;
  wireRoom(room);
  setText('connection-state', 'connecting');
  try {
    await room.connect(token.server_url, token.participant_token);
  } catch (error) {
    state.room = null;
    setText('connection-state', 'disconnected');
    $('join').disabled = false;
    showError(`Could not connect to LiveKit at ${token.server_url}: ${error.message}. Is the LiveKit server ` +
      'running and reachable from this browser? (A phone needs GOCARE_LIVEKIT_CLIENT_URL set to an address ' +
      'of your machine it can reach, see docs/playground.md.)');
    return;
  }
  setInCall(true);
  setText('connection-state', `connected to ${token.room_name} as ${room.localParticipant.identity}`);
  room.startAudio().catch(() => {});
  for (const participant of room.remoteParticipants.values()) noticeParticipant(participant);
  if (!state.agent) {
    setText('agent-state', 'waiting');
    state.agentTimer = setTimeout(() => {
      if (!state.agent && state.room === room) {
        showError(`No agent joined within ${AGENT_TIMEOUT_S} s. Is \`gocare worker\` running, connected to ` +
          `the same LiveKit server, with the same agent name (GOCARE_AGENT_NAME=${config.agentName}) as ` +
          'this token service?');
        setText('agent-state', 'no agent');
      }
    }, AGENT_TIMEOUT_S * 1000);
  }
  if ($('mic-on-join').checked) await setMicrophone(true);
  startMeter();
}

async function leave() {
  const room = state.room;
  if (!room) return;
  await room.disconnect();
}

function reset() {
  clearTimeout(state.agentTimer);
  stopMeter();
  state.room = null;
  state.agent = null;
  state.pttHeld = false;
  setMode(null);
  setInCall(false);
  setText('connection-state', 'disconnected');
  setText('agent-state', 'not joined');
  setMicButton(false);
  $('agent-audio').replaceChildren();
}

function wireRoom(room) {
  const E = LK.RoomEvent;
  room.on(E.ParticipantConnected, noticeParticipant);
  room.on(E.ParticipantDisconnected, (participant) => {
    if (state.agent && participant.identity === state.agent.identity) {
      state.agent = null;
      setText('agent-state', 'left');
    }
  });
  room.on(E.ParticipantAttributesChanged, (_changed, participant) => {
    if (state.agent && participant.identity === state.agent.identity) showAgentState(participant);
  });
  room.on(E.TrackSubscribed, (track) => {
    if (track.kind === 'audio') $('agent-audio').append(track.attach());
  });
  room.on(E.TrackUnsubscribed, (track) => track.detach().forEach((element) => element.remove()));
  room.on(E.DataReceived, onData);
  room.on(E.ConnectionStateChanged, (connection) => {
    if (state.room === room && connection !== 'disconnected') setText('connection-state', connection);
  });
  room.on(E.Disconnected, (reason) => {
    if (state.room !== room) return;
    const why = LK.DisconnectReason ? LK.DisconnectReason[reason] : reason;
    if (reason !== undefined && why !== 'CLIENT_INITIATED') showError(`Disconnected from the room (${why}).`);
    reset();
  });
  room.on(E.MediaDevicesError, (error) => showError(microphoneProblem(error)));
  room.on(E.LocalTrackPublished, () => setMicButton(room.localParticipant.isMicrophoneEnabled));
  room.on(E.TrackMuted, () => setMicButton(room.localParticipant.isMicrophoneEnabled));
  room.on(E.TrackUnmuted, () => setMicButton(room.localParticipant.isMicrophoneEnabled));
  room.registerTextStreamHandler('lk.transcription', onTranscription);
  room.registerTextStreamHandler('lk.chat', async (reader, from) => {
    const text = await reader.readAll();
    logProtocol('in', 'lk.chat', `from ${from.identity}`, text);
    transcriptLine(null, 'agent', text);
  });
}

function noticeParticipant(participant) {
  if (!participant.isAgent || state.agent) return;
  state.agent = participant;
  clearTimeout(state.agentTimer);
  if ($('error').textContent.startsWith('No agent joined')) showError('');
  showAgentState(participant);
}

function showAgentState(participant) {
  const agentState = participant.attributes['lk.agent.state'];
  setText('agent-state', `${participant.identity}: ${agentState || 'joined'}`);
}

// --- what arrives ---------------------------------------------------------------------------------------
function onData(payload, participant, _kind, topic) {
  const text = new TextDecoder().decode(payload);
  let message = text;
  try {
    message = JSON.parse(text);
  } catch (_) { /* shown as text */ }
  // no participant: the server API sent it, or its sender's arrival has not been announced yet
  const sender = participant ? participant.identity : 'server API or a participant not yet announced';
  logProtocol('in', 'packet', `topic=${topic ?? '-'} from ${sender}`, message);
  if (topic !== TOPIC || typeof message !== 'object' || message === null) return;
  if (message.type === 'welcome') {
    $('welcome').textContent = `Welcome packet: ${message.message}`;
    $('welcome').hidden = false;
  } else if (message.type === 'command_result') {
    showAnswer(message.command, message);
  } else if (message.type === 'agent_unavailable') {
    showError(message.message);
    leave();
  }
}

async function onTranscription(reader, from) {
  const attributes = reader.info.attributes || {};
  const key = attributes['lk.segment_id'] || reader.info.id;
  const who = from.identity === state.room?.localParticipant.identity ? 'user' : 'agent';
  let text = '';
  for await (const chunk of reader) {
    text += chunk;
    transcriptLine(key, who, text);
  }
}

// --- commands -------------------------------------------------------------------------------------------
async function command(method, args = {}) {
  if (!state.room) return null;
  if (!state.agent) {
    showError('The agent has not joined yet: a command needs the agent participant to answer it.');
    return null;
  }
  const payload = JSON.stringify(args);
  logProtocol('out', 'RPC', `${method} → ${state.agent.identity}`, args);
  try {
    const raw = await state.room.localParticipant.performRpc({
      destinationIdentity: state.agent.identity, method, payload, responseTimeout: RPC_TIMEOUT_MS,
    });
    let answer = raw;
    try {
      answer = JSON.parse(raw);
    } catch (_) { /* shown as text */ }
    logProtocol('in', 'RPC answer', method, answer);
    showAnswer(method, answer);
    return answer;
  } catch (error) {
    const text = `RPC ${method} failed: ${error.message}${error.code ? ` (code ${error.code})` : ''}`;
    logProtocol('in', 'RPC error', method, text);
    $('answer').textContent = text;
    return null;
  }
}

// --- microphone -----------------------------------------------------------------------------------------
function microphoneProblem(error) {
  const name = error && error.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return 'The microphone was denied. Allow it in the browser\'s site settings; from another device the ' +
      'page must be opened over https (or on localhost), see docs/playground.md.';
  }
  if (name === 'NotFoundError') return 'No microphone was found.';
  return `The microphone could not be opened: ${error && error.message ? error.message : error}`;
}

function setMicButton(on) {
  const button = $('mic-toggle');
  button.setAttribute('aria-pressed', String(on));
  button.textContent = on ? 'Microphone on' : 'Microphone off';
}

async function setMicrophone(on) {
  const room = state.room;
  if (!room) return false;
  if (on && !window.isSecureContext) {
    showError(microphoneProblem({ name: 'SecurityError' }));
    return false;
  }
  try {
    await room.localParticipant.setMicrophoneEnabled(on);
  } catch (error) {
    showError(microphoneProblem(error));
    return false;
  } finally {
    setMicButton(room.localParticipant.isMicrophoneEnabled);
  }
  return true;
}

function startMeter() {
  const analyser = new AudioContext();
  const node = analyser.createAnalyser();
  node.fftSize = 1024;
  const samples = new Float32Array(node.fftSize);
  let source = null;
  let current = null;
  const timer = setInterval(() => {
    const publication = state.room?.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
    const track = publication && !publication.isMuted ? publication.track?.mediaStreamTrack : null;
    if (track !== current) {
      source?.disconnect();
      source = track && track.readyState === 'live'
        ? analyser.createMediaStreamSource(new MediaStream([track])) : null;
      source?.connect(node);
      current = track;
    }
    let peak = 0;
    if (source) {
      node.getFloatTimeDomainData(samples);
      for (const value of samples) peak = Math.max(peak, Math.abs(value));
    }
    $('level').value = peak;
  }, 100);
  state.meter = { analyser, timer };
}

function stopMeter() {
  if (!state.meter) return;
  clearInterval(state.meter.timer);
  state.meter.analyser.close();
  state.meter = null;
  $('level').value = 0;
}

// --- push to talk ---------------------------------------------------------------------------------------
function pttStep(step) {
  state.ptt = state.ptt.then(step, step);
  return state.ptt;
}

function pttPress() {
  if (state.pttHeld || state.mode !== 'click_to_talk') return;
  state.pttHeld = true;
  $('ptt').classList.add('held');
  $('ptt').textContent = 'Talking… release to send';
  pttStep(async () => {
    const answer = await command('start_turn');
    if (answer && answer.ok && state.pttHeld) await setMicrophone(true);
  });
}

function pttRelease(cancel) {
  if (!state.pttHeld) return;
  state.pttHeld = false;
  $('ptt').classList.remove('held');
  $('ptt').textContent = 'Hold to talk';
  pttStep(async () => {
    await command(cancel ? 'cancel_turn' : 'end_turn');
    await setMicrophone(false);
  });
}

function wirePushToTalk() {
  const button = $('ptt');
  button.addEventListener('pointerdown', (event) => {
    if (button.disabled) return;
    button.setPointerCapture(event.pointerId);
    pttPress();
  });
  button.addEventListener('pointerup', () => pttRelease(false));
  button.addEventListener('pointercancel', () => pttRelease(true));
  button.addEventListener('keydown', (event) => {
    if ((event.key === ' ' || event.key === 'Enter') && !event.repeat) {
      event.preventDefault();
      pttPress();
    }
  });
  button.addEventListener('keyup', (event) => {
    if (event.key === ' ' || event.key === 'Enter') {
      event.preventDefault();
      pttRelease(false);
    }
  });
  button.addEventListener('contextmenu', (event) => event.preventDefault());
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.pttHeld) pttRelease(true);
  });
}

// --- text chat ------------------------------------------------------------------------------------------
async function sendChat(event) {
  event.preventDefault();
  const input = $('chat-text');
  const text = input.value.trim();
  if (!text || !state.room) return;
  input.value = '';
  logProtocol('out', 'lk.chat', 'text stream', text);
  transcriptLine(null, 'chat', text);
  try {
    await state.room.localParticipant.sendText(text, { topic: 'lk.chat' });
  } catch (error) {
    showError(`The chat message could not be sent: ${error.message}`);
  }
}

// --- voice message --------------------------------------------------------------------------------------
const RECORDING_TYPES = [
  ['audio/webm;codecs=opus', 'message.webm'],
  ['audio/webm', 'message.webm'],
  ['audio/mp4', 'message.m4a'], // Safari
  ['audio/ogg;codecs=opus', 'message.ogg'],
];

async function toggleRecording() {
  if (state.recording) {
    await stopAndUpload();
  } else {
    await startRecording();
  }
}

async function startRecording() {
  const room = state.room;
  if (!room) return;
  // the live agent should not hear the message as it is recorded: the call's microphone pauses meanwhile
  if (!window.isSecureContext || !navigator.mediaDevices) {
    showError(microphoneProblem({ name: 'SecurityError' }));
    return;
  }
  const micWasOn = room.localParticipant.isMicrophoneEnabled;
  if (micWasOn) await setMicrophone(false);
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError(microphoneProblem(error));
    if (micWasOn) await setMicrophone(true);
    return;
  }
  const [mimeType, filename] = RECORDING_TYPES.find(([type]) => MediaRecorder.isTypeSupported(type)) || ['', 'message.webm'];
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
  const chunks = [];
  recorder.addEventListener('dataavailable', (event) => { if (event.data.size) chunks.push(event.data); });
  const stopped = new Promise((resolve) => recorder.addEventListener('stop', resolve, { once: true }));
  recorder.start(250);
  state.recording = { recorder, stream, chunks, stopped, filename, micWasOn, started: performance.now() };
  $('record').textContent = 'Stop and send';
  $('record').setAttribute('aria-pressed', 'true');
  setText('record-status', 'recording…');
}

async function stopAndUpload() {
  const recording = state.recording;
  state.recording = null;
  recording.recorder.stop();
  await recording.stopped;
  recording.stream.getTracks().forEach((track) => track.stop());
  $('record').textContent = 'Record message';
  $('record').setAttribute('aria-pressed', 'false');
  const seconds = ((performance.now() - recording.started) / 1000).toFixed(1);
  const blob = new Blob(recording.chunks, { type: recording.recorder.mimeType || 'audio/webm' });
  setText('record-status', `sending ${seconds} s (${blob.size} bytes)…`);
  if (recording.micWasOn) await setMicrophone(true);
  const form = new FormData();
  form.append('file', blob, recording.filename);
  const path = `voice/upload?room=${encodeURIComponent(state.roomName)}`;
  logProtocol('out', 'HTTP', `POST /${path}`, { file: recording.filename, type: blob.type, bytes: blob.size });
  let response;
  try {
    response = await fetch(path, { method: 'POST', body: form, headers: authHeaders() });
  } catch (error) {
    setText('record-status', '');
    showError(`The voice message could not be sent: ${error.message}`);
    return;
  }
  if (!response.ok) {
    const text = await refusal(response, 'The voice message was');
    logProtocol('in', 'HTTP', `${response.status} /voice/upload`, text);
    setText('record-status', '');
    showError(text);
    return;
  }
  const result = await response.json();
  logProtocol('in', 'HTTP', `${response.status} /voice/upload`,
    { ...result, speech_audio: result.speech_audio ? `(${result.speech_audio.length} base64 characters)` : null });
  setText('record-status', 'answered');
  setText('upload-transcript', result.transcript ?? '');
  setText('upload-reply', result.reply ?? '(no reply)');
  setText('upload-notified', String(result.agent_notified));
  $('upload-result').hidden = false;
  if (result.speech_audio) playReply(result.speech_audio, result.speech_format);
}

function playReply(base64, format) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const type = { mp3: 'audio/mpeg', wav: 'audio/wav', ogg: 'audio/ogg' }[format] || 'audio/mpeg';
  const audio = $('upload-audio');
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(new Blob([bytes], { type }));
  audio.hidden = false;
  audio.play().catch(() => { /* autoplay refused: the controls are there */ });
}

// --- call records: GET /calls for the identity in the form ---------------------------------------------
function callsHeaders() {
  const bearer = config.authMode === 'jwt' ? $('bearer').value.trim() : '';
  return bearer ? { Authorization: `Bearer ${bearer}` } : {};
}

function callsQuery() {
  // none mode names the identity; in jwt mode the service answers the bearer's own calls
  const identity = $('identity').value.trim();
  return config.authMode !== 'jwt' && identity ? `identity=${encodeURIComponent(identity)}` : '';
}

async function getJson(path, what) {
  logProtocol('out', 'HTTP', `GET /${path}`, '');
  let response;
  try {
    response = await fetch(path, { headers: callsHeaders() });
  } catch (error) {
    showError(`${what} could not be fetched: ${error.message}`);
    return null;
  }
  if (!response.ok) {
    const text = await refusal(response, what);
    logProtocol('in', 'HTTP', `${response.status} /${path.split('?')[0]}`, text);
    showError(text);
    return null;
  }
  const body = await response.json();
  logProtocol('in', 'HTTP', `${response.status} /${path.split('?')[0]}`, body);
  return body;
}

async function loadCalls() {
  showError('');
  $('call-detail').hidden = true;
  const query = callsQuery();
  setText('calls-status', 'loading…');
  const page = await getJson(`calls?limit=20${query ? `&${query}` : ''}`, 'The call list was');
  if (!page) {
    setText('calls-status', '');
    return;
  }
  setText('calls-status', `${page.calls.length} of ${page.total} call(s)`);
  const list = $('calls-list');
  list.replaceChildren();
  for (const call of page.calls) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'call';
    button.dataset.callId = call.call_id;
    const when = call.started_at ? new Date(call.started_at).toLocaleString() : '';
    const seconds = call.duration_seconds == null ? '' : ` · ${Math.round(call.duration_seconds)} s`;
    button.textContent = `${when}${seconds} · ${call.end_reason || call.status} · ` +
      `${call.verified ? 'verified' : 'not verified'} · ${call.room || ''}${analysisBrief(call.analysis)}`;
    button.addEventListener('click', () => showCall(call.call_id));
    item.append(button);
    list.append(item);
  }
}

function shownValue(value) {
  if (value === null || value === undefined) return '—';
  return typeof value === 'boolean' ? (value ? 'yes' : 'no') : String(value);
}

// the end-of-call analysis (docs/call-records.md "Analysis"): its alerts in the list, its fields in the detail;
// always as text (textContent), never as HTML: the model wrote the values from what a caller said
function analysisBrief(analysis) {
  if (!analysis) return '';
  if (analysis.status !== 'done') return ` · analysis ${analysis.status}`;
  const alerts = analysis.alerts.map((a) => `${a.field}=${shownValue(a.value)}`).join(', ');
  return ` · analysed${alerts ? ` · alert: ${alerts}` : ''}`;
}

function showAnalysis(analysis) {
  const list = $('call-analysis');
  list.replaceChildren();
  const row = (name, value) => {
    list.append(Object.assign(document.createElement('dt'), { textContent: name }));
    list.append(Object.assign(document.createElement('dd'), { textContent: value }));
  };
  if (!analysis) {
    setText('call-analysis-title', 'Analysis: none (not analysed)');
    return;
  }
  setText('call-analysis-title', `Analysis: ${analysis.status} (plan ${analysis.plan})`);
  for (const [name, value] of Object.entries(analysis.values)) row(name, shownValue(value));
  if (analysis.success !== null) row('success', shownValue(analysis.success));
  if (analysis.alerts.length) row('alerts', analysis.alerts.map((a) => `${a.field}=${shownValue(a.value)}`).join(', '));
  if (analysis.error) row('error', analysis.error);
}

async function showCall(callId) {
  showError('');
  const query = callsQuery();
  const call = await getJson(`calls/${encodeURIComponent(callId)}${query ? `?${query}` : ''}`, 'The call record was');
  if (!call) return;
  setText('call-detail-title', `Call ${call.call_id}`);
  setText('call-detail-facts', `${call.end_reason || call.status} · modes: ${call.modes.join(', ') || 'none'} · ` +
    `uploads: ${call.voice_uploads}${call.summary ? ` · summary: ${call.summary}` : ''}`);
  showAnalysis(call.analysis);
  const turns = $('call-turns');
  turns.replaceChildren();
  for (const turn of call.turns) {
    const item = document.createElement('li');
    item.className = turn.role === 'user' ? 'user' : 'agent';
    item.textContent = `${turn.role}${turn.source === 'upload' ? ' (upload)' : ''}: ${turn.text}`;
    turns.append(item);
  }
  if (!call.turns.length) turns.append(Object.assign(document.createElement('li'), { textContent: '(no transcript)' }));
  $('call-detail').hidden = false;
}

// --- start ----------------------------------------------------------------------------------------------
function start() {
  setText('livekit-url', config.livekitUrl);
  setText('agent-name', config.agentName);
  if (config.authMode === 'jwt') {
    $('bearer-row').hidden = false;
    $('identity-row').hidden = true; // the identity is the bearer token's subject
  }
  for (const [id, key] of [['room', 'room'], ['identity', 'identity'], ['name', 'name']]) {
    if (params.get(key)) $(id).value = params.get(key);
  }
  if (params.get('mic') === 'off') $('mic-on-join').checked = false;
  $('join-form').addEventListener('submit', join);
  $('leave').addEventListener('click', leave);
  for (const button of document.querySelectorAll('[data-agent]')) {
    button.addEventListener('click', () => command('switch_agent', { agent: button.dataset.agent }));
  }
  $('start-conversation').addEventListener('click', () => command('start_conversation'));
  $('stop-conversation').addEventListener('click', () => command('stop_conversation'));
  $('mic-toggle').addEventListener('click', () => {
    if (state.room) setMicrophone(!state.room.localParticipant.isMicrophoneEnabled);
  });
  $('chat-form').addEventListener('submit', sendChat);
  $('record').addEventListener('click', toggleRecording);
  $('protocol-clear').addEventListener('click', () => $('protocol').replaceChildren());
  $('calls-load').addEventListener('click', loadCalls);
  wirePushToTalk();
  if (!LK) {
    showError(`The LiveKit browser SDK did not load from ${config.sdkUrl}. Offline, or its integrity hash ` +
      'did not match? Set GOCARE_PLAYGROUND_SDK_URL (and GOCARE_PLAYGROUND_SDK_SRI) on the token service.');
  }
  document.body.dataset.ready = 'true';
}

start();
