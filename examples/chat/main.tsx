// "Who is typing" chat (the seed's live-typing feature) on Rill: messages on `chat.<room>`,
// ephemeral typing signals on `typing.<room>` (never stored), both through `useStream` and one shared client; who is here
// through `usePresence` (the page's token, from the example server, names its user).
import { StrictMode, useEffect, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { RillProvider, usePresence, useRillClient, useStream } from '@rill/react';

interface Message {
  user: string;
  text: string;
}
interface Typing {
  user: string;
  typing: boolean;
}

/** How long a "typing" signal lasts without a new one, and how often one is re-sent. */
const TYPING_TTL = 3000;
const TYPING_EVERY = 1000;

const params = new URLSearchParams(location.search);
const room = params.get('room') ?? 'room-1';
const myName = params.get('name') ?? `guest-${Math.floor(Math.random() * 1000)}`;

/** The page's token: what an app's backend hands a signed-in user (here, anyone by name). */
const token = (): Promise<string> =>
  fetch(`/examples/chat/token?name=${encodeURIComponent(myName)}`).then((r) => r.text());

/** Who is in the room: everyone subscribed to it, by the name their token carries. */
function Here() {
  const { members } = usePresence(`chat.${room}`);
  return (
    <p className="here" id="here">
      here: {members.map((m) => (m.info?.name as string | undefined) ?? m.sub).join(', ')}
    </p>
  );
}

function useTypists(me: string): string[] {
  const [until, setUntil] = useState(new Map<string, number>());
  useStream<Typing>(`typing.${room}`, {
    maxEvents: 1,
    onEvent: (ev) => {
      if (ev.data.user === me) return;
      setUntil((m) => {
        const next = new Map(m);
        if (ev.data.typing) next.set(ev.data.user, Date.now() + TYPING_TTL);
        else next.delete(ev.data.user);
        return next;
      });
    },
  });
  const [, setNow] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, []);
  return [...until]
    .filter(([, t]) => t > Date.now())
    .map(([u]) => u)
    .sort();
}

function Chat() {
  const rill = useRillClient();
  const [me, setMe] = useState(myName);
  const [text, setText] = useState('');
  const lastSent = useRef(0);
  const { events, status } = useStream<Message>(`chat.${room}`, {
    from: 'earliest',
    maxEvents: 200,
  });
  const typists = useTypists(me);

  const typing = (typing: boolean): void => {
    void rill.publishEphemeral(`typing.${room}`, { user: me, typing }).catch(() => {});
  };
  const onChange = (v: string): void => {
    setText(v);
    if (v && Date.now() - lastSent.current > TYPING_EVERY) {
      lastSent.current = Date.now();
      typing(true);
    }
  };
  const send = (e: React.FormEvent): void => {
    e.preventDefault();
    if (!text.trim()) return;
    void rill.publish(`chat.${room}`, { user: me, text }, { type: 'message' });
    setText('');
    lastSent.current = 0;
    typing(false);
  };

  return (
    <>
      <h1>#{room}</h1>
      <p className="status">
        you are <input id="name" value={me} onChange={(e) => setMe(e.target.value)} size={10} /> ·
        status: <span id="status">{status}</span>
      </p>
      <Here />
      <ul className="msgs" id="messages">
        {events.map((ev) => (
          <li key={ev.seq}>
            <b>{ev.data.user}</b>: {ev.data.text}
          </li>
        ))}
      </ul>
      <div className="typing" id="typing">
        {typists.length === 0
          ? ''
          : `${typists.join(', ')} ${typists.length === 1 ? 'is' : 'are'} typing…`}
      </div>
      <form onSubmit={send}>
        <input
          id="text"
          value={text}
          onChange={(e) => onChange(e.target.value)}
          placeholder="Type a message…"
          autoFocus
        />
        <button type="submit">Send</button>
      </form>
    </>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <RillProvider token={token}>
      <Chat />
    </RillProvider>
  </StrictMode>,
);
