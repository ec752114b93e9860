// What the page says when a photo cannot be used: in the page's words, naming the page's own controls
// (never a CLI flag or a query parameter), the same whichever side, device or cloud, met the problem.

export const NOT_A_PHOTO = "this file is not a photo we can read (JPEG or PNG)";

const NO_FACE = "no face found in the photo";
const NO_FACE_ADVICE = "use a well-lit, frontal photo where the face fills at least an eighth of the picture";
const SKIP_FINDING = "(or untick “find the face” for a photo that is already a cropped, aligned face)";

/**
 * No face in the photo. ``finder``: the face finder found none (unticking "find the face" is then a
 * way around it); ``detail``: what the landmark network saw instead, when it looked.
 */
export function noFace({ finder = false, detail = "" } = {}) {
  return `${NO_FACE}${detail ? ` (${detail})` : ""}: ${NO_FACE_ADVICE}${finder ? ` ${SKIP_FINDING}` : ""}`;
}
