// The recording player: `ztproxy recording play FILE` serves this page and the recording,
// decrypted in the ztproxy process (the page never holds a key), as a Guacamole session
// recording. Guacamole.SessionRecording plays it; the seek bar marks the recording's own key
// frames (from its seek index), and seeking lands on the frame of that moment.

import Guacamole from "./guac";
import { baseUrl } from "./signalling";

interface RecordingInfo {
  /** What was recorded: "graphical" or "typescript" (rendered by ztproxy's terminal). */
  kind: string;
  /** Key frames of the recording's seek index, in milliseconds from its start. */
  keyframes: number[];
  /** The recording's length in milliseconds. */
  duration: number;
}

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const statusElement = element("status");
const display = element("display");
const play = element<HTMLButtonElement>("play");
const speed = element<HTMLSelectElement>("speed");
const position = element<HTMLInputElement>("position");
const keyframes = element("keyframes");
const time = element("time");

function show(state: string, text: string | null): void {
  document.body.dataset.state = state;
  statusElement.hidden = text === null;
  statusElement.textContent = text ?? "";
}

function clock(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

async function main(): Promise<void> {
  show("loading", "Loading…");
  const response = await fetch(baseUrl() + "info", { cache: "no-store" });
  if (!response.ok) throw new Error(`the local helper answered ${response.status}`);
  const info = (await response.json()) as RecordingInfo;

  const tunnel = new Guacamole.StaticHTTPTunnel(baseUrl() + "recording.guac");
  const recording = new Guacamole.SessionRecording(tunnel);
  const recordingDisplay = recording.getDisplay();
  display.append(recordingDisplay.getElement());
  const fit = () => {
    const width = recordingDisplay.getWidth();
    const height = recordingDisplay.getHeight();
    if (width > 0 && height > 0) {
      recordingDisplay.scale(Math.min(1, display.clientWidth / width, display.clientHeight / height));
    }
  };
  recordingDisplay.onresize = fit;
  window.addEventListener("resize", fit);

  // Speed: Guacamole.SessionRecording plays at recorded speed; any other speed is played
  // by seeking along the timeline every 100 ms while its own playback is paused.
  let rate = 1;
  let driver: number | undefined;
  const driving = () => driver !== undefined;
  const stopDriving = () => {
    window.clearInterval(driver);
    driver = undefined;
    play.textContent = "Play";
  };
  const drive = () => {
    recording.pause();
    const started = performance.now();
    const from = recording.getPosition();
    play.textContent = "Pause";
    driver = window.setInterval(() => {
      const target = from + (performance.now() - started) * rate;
      if (target >= recording.getDuration()) {
        stopDriving();
        recording.seek(recording.getDuration());
      } else {
        recording.seek(target);
      }
    }, 100);
  };
  const start = () => (rate === 1 ? recording.play() : drive());
  speed.addEventListener("change", () => {
    rate = Number(speed.value) || 1;
    if (recording.isPlaying() || driving()) {
      stopDriving();
      recording.pause();
      start();
    }
  });

  recording.onprogress = (duration: number) => {
    position.max = String(duration);
    time.textContent = `${clock(recording.getPosition())} / ${clock(duration)}`;
  };
  recording.onload = () => {
    const duration = recording.getDuration();
    position.max = String(duration);
    keyframes.replaceChildren(
      ...info.keyframes.map((at) => {
        const mark = document.createElement("span");
        mark.style.left = `${duration > 0 ? (100 * at) / duration : 0}%`;
        mark.title = clock(at);
        return mark;
      }),
    );
    show("ready", null);
    // Show the first frame.
    recording.seek(0);
  };
  recording.onerror = (message: string) => show("ended", `The recording cannot be played: ${message}`);
  recording.onplay = () => {
    play.textContent = "Pause";
  };
  recording.onpause = () => {
    if (!driving()) play.textContent = "Play";
  };
  recording.onseek = (at: number) => {
    position.value = String(at);
    time.textContent = `${clock(at)} / ${clock(recording.getDuration())}`;
  };
  play.addEventListener("click", () => {
    if (recording.isPlaying() || driving()) {
      stopDriving();
      recording.pause();
    } else {
      start();
    }
  });
  position.addEventListener("input", () => {
    const target = Number(position.value);
    const wasPlaying = recording.isPlaying();
    stopDriving();
    recording.seek(target, () => {
      // Images decode asynchronously: mark the moment only once the display has drawn them
      // (tests wait for this mark before looking).
      recordingDisplay.flush(() => {
        document.body.dataset.seeked = String(target);
      });
      if (wasPlaying) recording.play();
    });
  });
  recording.connect();
}

main().catch((error: unknown) => {
  show("ended", `The recording cannot be played: ${error instanceof Error ? error.message : String(error)}`);
});
