// The cloud's frame rate projected onto the advisor's network profiles (tandem.advisor.networks, whose
// numbers networks.json copies): the page measures a frame's round trip to this server (loopback or
// LAN) and its bytes each way, and adds what the profile's link would add, by the advisor's formula:
//
//   transfer = RTT + 8·up_bytes / uplink + 8·down_bytes / downlink + loss penalty
//   loss penalty = (1 − (1 − p)^packets) · max(200 ms, 2·RTT)
//
// One frame is in flight at a time (the next frame goes when the last answer is back: a live view
// wants the newest frame, not a queue), so the rate is 1000 / (round trip + transfer). Projected,
// not emulated: nothing here delays a request.
import NETWORKS from "./networks.json";

export const PROFILES = NETWORKS.profiles;

const packets = (bytes) => Math.max(1, Math.ceil(bytes / NETWORKS.mss_bytes));

/** Milliseconds one request of ``upBytes`` with an answer of ``downBytes`` spends on ``profile``'s link. */
export function transferMs(profile, upBytes, downBytes) {
  const up = (upBytes * 8) / (profile.up_mbps * 1000); // 1 Mbps = 1,000 bits per ms
  const down = (downBytes * 8) / (profile.down_mbps * 1000);
  const anyLoss = 1 - (1 - profile.loss) ** (packets(upBytes) + packets(downBytes));
  return profile.rtt_ms + up + down + anyLoss * Math.max(NETWORKS.min_rto_ms, 2 * profile.rtt_ms);
}

/** {profile: {frame_ms, fps}} for a measured round trip ``roundTripMs`` carrying ``upBytes``/``downBytes``. */
export function project(roundTripMs, upBytes, downBytes) {
  const out = {};
  for (const [name, profile] of Object.entries(PROFILES)) {
    const frameMs = roundTripMs + transferMs(profile, upBytes, downBytes);
    out[name] = { frame_ms: frameMs, fps: 1000 / frameMs };
  }
  return out;
}
