// Opens a study in OHIF 3.13.2's built viewer with headless Chromium (Debian's, through
// puppeteer-core), shows the SR, the SEG and the key image, takes screenshots, and prints
// JSON on stdout with what the viewer loaded (from window.services):
//   {displaySets: [{modality, description}], sr: {measurements: [{labels}]},
//    segmentation: {segments: [label...]}, shots: [...], errors: [...]}
//
// usage: node ohif_shots.mjs BASE_URL STUDY_UID OUT_DIR [SEG_SOP_UID]
// SEG_SOP_UID: the image the SEG screenshot shows (default: the middle sagittal slice)
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const [base, studyUid, outDir, segSop] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const errors = [];
const result = { displaySets: [], sr: null, segmentation: null, shots: [], errors };

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--enable-unsafe-swiftshader', '--use-angle=swiftshader',
         '--window-size=1400,900'],
});
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function until(page, fn, arg, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await page.evaluate(fn, arg).catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}
async function click(page, text) {
  // the first visible button whose text is ``text`` (OHIF's prompts and notices)
  return page.evaluate(t => {
    const b = [...document.querySelectorAll('button')].find(x => x.textContent.trim() === t && x.offsetParent);
    if (b) b.click();
    return !!b;
  }, text);
}
async function shot(page, name) {
  const file = path.join(outDir, name);
  await page.screenshot({ path: file });
  result.shots.push(file);
}

try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  page.on('pageerror', e => errors.push(`pageerror: ${e.message}`));
  await page.evaluateOnNewDocument(() => localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])));
  await page.goto(`${base}/viewer?StudyInstanceUIDs=${studyUid}`, { waitUntil: 'load', timeout: 60000 });
  await until(page, () => window.services?.displaySetService?.getActiveDisplaySets().length >= 4, null, 'display sets');
  await sleep(3000);
  await click(page, 'Confirm and hide');  // OHIF's one-time "investigational use" notice
  await sleep(500);
  result.displaySets = await page.evaluate(() => window.services.displaySetService.getActiveDisplaySets()
    .map(d => ({ modality: d.Modality, description: d.SeriesDescription, uid: d.displaySetInstanceUID })));
  await shot(page, 'ohif_study.png');

  const show = async modality => {
    const ds = result.displaySets.find(d => d.modality === modality);
    if (!ds) throw new Error(`no ${modality} display set`);
    await page.evaluate(uid => {
      const { viewportGridService } = window.services;
      const viewportId = viewportGridService.getActiveViewportId();
      viewportGridService.setDisplaySetsForViewport({ viewportId, displaySetInstanceUIDs: [uid] });
    }, ds.uid);
    return ds.uid;
  };

  const srUid = await show('SR');
  await until(page, uid => window.services.displaySetService.getDisplaySetByUID(uid)?.isLoaded, srUid, 'SR loaded');
  await sleep(6000);
  result.sr = await page.evaluate(uid => {
    const ds = window.services.displaySetService.getDisplaySetByUID(uid);
    return { isRehydratable: !!ds.isRehydratable,
             measurements: (ds.measurements || []).map(m => ({ labels: m.labels, loaded: !!m.loaded,
                                                               coords: (m.coords || []).length })) };
  }, srUid);
  await shot(page, 'ohif_sr.png');
  const shownImageId = () => page.evaluate(() => {
    const { viewportGridService, cornerstoneViewportService } = window.services;
    return cornerstoneViewportService.getCornerstoneViewport(viewportGridService.getActiveViewportId())
      ?.getCurrentImageId() ?? null;
  }).catch(e => { errors.push(`shown image: ${e.message}`); return null; });
  result.sr.trackPrompt = await click(page, 'Yes');  // "continue tracking measurements?"
  await until(page, () => window.services.measurementService.getMeasurements().length > 0, null, 'tracked measurements', 30000)
    .catch(e => errors.push(e.message));
  await sleep(3000);
  result.sr.tracked = await page.evaluate(() => window.services.measurementService.getMeasurements()
    .map(m => ({ toolName: m.toolName, label: m.label, displayText: m.displayText, uid: m.uid })));
  // as a click in the measurement panel does: jump to a tracked measurement, panel open
  const jump = async toolName => {
    const shown = await page.evaluate(name => {
      const { measurementService, viewportGridService, panelService } = window.services;
      const ms = measurementService.getMeasurements().filter(x => x.toolName === name);
      const m = ms.find(x => (x.label || '').startsWith('L4-L5')) ?? ms[0];  // the level most often narrowed
      if (!m) return null;
      try { panelService.activatePanel('@ohif/extension-measurement-tracking.panelModule.trackedMeasurements', true); }
      catch (e) { /* the panel is optional for the screenshot */ }
      measurementService.jumpToMeasurement(viewportGridService.getActiveViewportId(), m.uid);
      const head = (m.label || '').slice(0, 20);  // its row in the panel, scrolled into view
      const row = [...document.querySelectorAll('div, span')]
        .find(e => e.children.length === 0 && head && e.textContent.startsWith(head));
      row?.scrollIntoView({ block: 'center' });
      return { label: m.label, uid: m.uid };
    }, toolName).catch(e => { errors.push(`jump ${toolName}: ${e.message}`); return null; });
    await sleep(5000);
    if (shown) {
      shown.shownImageId = await shownImageId();
      // what the viewer computed from the drawn geometry once it was rendered
      shown.displayText = await page.evaluate(uid => window.services.measurementService.getMeasurement(uid)?.displayText ?? null,
                                              shown.uid).catch(e => { errors.push(`displayText: ${e.message}`); return null; });
    }
    return shown;
  };
  result.sr.length = await jump('Length');
  await shot(page, 'ohif_sr_tracked.png');
  // a level's dural sac area (a PlanarFreehandROI): the viewport shows its axial slice
  result.sr.area = await jump('PlanarFreehandROI');
  if (result.sr.area) await shot(page, 'ohif_sac_area.png');

  const segUid = await show('SEG');
  result.segPrompt = await until(page, () => {  // "Do you want to open this Segmentation?" -> Yes
    const b = [...document.querySelectorAll('button')].find(x => x.textContent.trim() === 'Yes' && x.offsetParent);
    if (b) b.click();
    return !!b;
  }, null, 'SEG prompt', 30000).catch(e => { errors.push(e.message); return false; });
  await until(page, () => window.services.segmentationService.getSegmentations().length > 0, null, 'SEG hydrated', 90000)
    .catch(e => errors.push(e.message));
  await sleep(4000);
  result.segSlice = await page.evaluate(sop => {  // the image asked for, else the middle sagittal slice
    const { viewportGridService, cornerstoneViewportService } = window.services;
    const vp = cornerstoneViewportService.getCornerstoneViewport(viewportGridService.getActiveViewportId());
    const ids = vp.getImageIds();
    const n = ids.length;
    const asked = sop ? ids.findIndex(id => id.includes(`/instances/${sop}/`)) : -1;
    const k = asked >= 0 ? asked : Math.floor(n / 2);
    vp.setImageIdIndex(k);
    return `${k + 1}/${n}${asked >= 0 ? '' : ' (middle)'}`;
  }, segSop || '').catch(e => { errors.push(`slice: ${e.message}`); return null; });
  await sleep(3000);
  result.segmentation = await page.evaluate(() => {
    const segs = window.services.segmentationService.getSegmentations();
    return segs.map(s => ({ label: s.label, segments: Object.values(s.segments || {}).filter(Boolean)
      .map(x => x.label) }));
  });
  void segUid;
  await shot(page, 'ohif_seg.png');

  await show('OT');
  await sleep(4000);
  await shot(page, 'ohif_key_image.png');
} catch (e) {
  errors.push(`script: ${e.message}`);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
