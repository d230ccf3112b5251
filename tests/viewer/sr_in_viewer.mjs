// Reads a TID 1500 SR the way OHIF 3.13.2 does, with the viewer's own packages
// (dcmjs 0.52.0, @cornerstonejs/adapters 5.6.8), and prints JSON on stdout:
//
//   {"toolState": {toolType: [{label, finding, findingSites, sopInstanceUid, points, cachedStats, contour}]},
//    "display":   [{trackingIdentifier, lines, coords: [{graphicType, points}]}],
//    "warnings":  [...console.warn lines of the adapters...]}
//
// - toolState: MeasurementReport.generateToolState, the call behind OHIF's
//   "Track measurements? Yes" (extension-cornerstone-dicom-sr hydrateStructuredReport).
// - display: the measurements and text-box lines OHIF's SR viewport builds from the
//   same dataset. This is a port of the rules in @ohif/extension-cornerstone-dicom-sr
//   3.13 (getSopClassHandlerModule: _processMeasurement, _processTID1410Measurement,
//   _processNonGeometricallyDefinedMeasurement, _labelFromMeasuredValueSequence;
//   DICOMSRDisplayTool._getTextBoxLinesFromLabels), kept line for line so a test can
//   read what a radiologist sees.
//
// usage: node sr_in_viewer.mjs SR.dcm IMAGES.json
// IMAGES.json: {sopInstanceUID: {frameOfReferenceUID, imagePositionPatient, rowCosines,
//               columnCosines, rowPixelSpacing, columnPixelSpacing, rows, columns,
//               sopClassUID, seriesInstanceUID, studyInstanceUID}}
import fs from 'node:fs';
import dcmjs from 'dcmjs';
import { metaData } from '@cornerstonejs/core';
import { adaptersSR } from '@cornerstonejs/adapters';

const [srPath, imagesPath] = process.argv.slice(2);
const images = JSON.parse(fs.readFileSync(imagesPath, 'utf8'));
const warnings = [];
const origWarn = console.warn;
console.warn = (...args) => { warnings.push(args.map(a => (a instanceof Error ? a.message : typeof a === 'string' ? a : '')).join(' ')); };
console.log = () => {}; // the adapters log every measurement; stdout is for the JSON

const imageIdOf = uid => `spinenode:${uid}`;
const uidOf = imageId => imageId.slice('spinenode:'.length);
function provider(type, imageId) {
  if (typeof imageId !== 'string' || !imageId.startsWith('spinenode:')) return undefined;
  const im = images[uidOf(imageId)];
  if (!im) return undefined;
  if (type === 'imagePlaneModule') {
    return {
      frameOfReferenceUID: im.frameOfReferenceUID,
      rows: im.rows, columns: im.columns,
      imagePositionPatient: im.imagePositionPatient,
      rowCosines: im.rowCosines, columnCosines: im.columnCosines,
      imageOrientationPatient: [...im.rowCosines, ...im.columnCosines],
      rowPixelSpacing: im.rowPixelSpacing, columnPixelSpacing: im.columnPixelSpacing,
    };
  }
  if (type === 'sopCommonModule') return { sopClassUID: im.sopClassUID, sopInstanceUID: uidOf(imageId) };
  if (type === 'instance') {
    return { SOPInstanceUID: uidOf(imageId), SeriesInstanceUID: im.seriesInstanceUID, StudyInstanceUID: im.studyInstanceUID };
  }
  return undefined;
}
metaData.addProvider(provider, 10000);

const buffer = fs.readFileSync(srPath);
const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
const dicomData = dcmjs.data.DicomMessage.readFile(arrayBuffer);
const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);

const sopToImageId = {};
for (const uid of Object.keys(images)) sopToImageId[`${uid}:1`] = imageIdOf(uid);

const { MeasurementReport } = adaptersSR.Cornerstone3D;
const state = MeasurementReport.generateToolState(dataset, sopToImageId, metaData);
const toolState = {};
for (const [toolType, list] of Object.entries(state)) {
  toolState[toolType] = list.map(m => ({
    label: m.annotation.data.label ?? null,
    finding: m.finding ? { CodeValue: m.finding.CodeValue, CodingSchemeDesignator: m.finding.CodingSchemeDesignator, CodeMeaning: m.finding.CodeMeaning } : null,
    findingSites: (m.findingSites || []).map(s => ({ CodeValue: s.CodeValue, CodeMeaning: s.CodeMeaning })),
    sopInstanceUid: m.sopInstanceUid ?? null,
    points: (m.annotation.data.handles?.points || []).map(p => Array.from(p)),
    cachedStats: m.annotation.data.cachedStats,
    // PlanarFreehandROI (an area): its outline, closed when the last point is the first
    contour: m.annotation.data.contour
      ? { points: m.annotation.data.contour.polyline.length, closed: !!m.annotation.data.contour.closed }
      : null,
  }));
}

// ---- port of OHIF's SR display-set rules (extension-cornerstone-dicom-sr 3.13) -------------
const CODES = {
  ImagingMeasurements: '126010', MeasurementGroup: '125007', TrackingUniqueIdentifier: '112040',
  TrackingIdentifier: '112039', Finding: '121071', FindingSite: 'G-C0E3', FindingSiteSCT: '363698007',
};
const toArray = x => (x ? (Array.isArray(x) ? x : [x]) : []);
const cname = item => toArray(item.ConceptNameCodeSequence)[0] || {};
function labelFromMeasuredValue(conceptName, mv) {
  const { CodeMeaning } = conceptName;
  const { NumericValue, MeasurementUnitsCodeSequence } = mv;
  const { CodeValue } = toArray(MeasurementUnitsCodeSequence)[0];
  const formatted = NumericValue ? Number(NumericValue).toFixed(2) : '';
  return { label: CodeMeaning, value: `${formatted} ${CodeValue}` };
}
function coordOf(item) {
  const content = toArray(item.ContentSequence)[0] || {};
  return {
    graphicType: item.GraphicType,
    points: item.GraphicData.length / (item.ValueType === 'SCOORD3D' ? 3 : 2),
    referencedSOPInstanceUID: toArray(content.ReferencedSOPSequence)[0]?.ReferencedSOPInstanceUID ?? null,
  };
}
function isScoord(item) {
  return item.ValueType === 'SCOORD' || item.ValueType === 'SCOORD3D';
}
function processTID1410(items) {
  const graphic = items.find(isScoord);
  const tracking = items.find(i => cname(i).CodeValue === CODES.TrackingIdentifier);
  const uid = items.find(i => i.ValueType === 'UIDREF');
  const m = { trackingIdentifier: tracking?.TextValue, trackingUID: uid?.UID, labels: [], coords: [coordOf(graphic)] };
  items.filter(i => i.ValueType === 'NUM').forEach(i => {
    const mv = toArray(i.MeasuredValueSequence)[0];
    if (mv) m.labels.push(labelFromMeasuredValue(cname(i), mv));
  });
  const sites = items.filter(i => cname(i).CodingSchemeDesignator === 'SCT' && cname(i).CodeValue === CODES.FindingSiteSCT);
  if (sites.length) m.labels.push({ label: CODES.FindingSiteSCT, value: toArray(sites[0].ConceptCodeSequence)[0].CodeMeaning });
  return m;
}
function processNonGeometric(items) {
  const tracking = items.find(i => cname(i).CodeValue === CODES.TrackingIdentifier);
  const uid = items.find(i => i.ValueType === 'UIDREF');
  const m = { trackingIdentifier: tracking?.TextValue, trackingUID: uid?.UID, labels: [], coords: [] };
  items.filter(i => cname(i).CodingSchemeDesignator === 'DCM' && cname(i).CodeValue === '121106')
    .forEach(i => { if (i.TextValue) m.labels.push({ label: i.TextValue, value: '' }); });
  items.filter(i => i.ValueType === 'NUM').forEach(i => {
    const mv = toArray(i.MeasuredValueSequence)[0];
    const cs = toArray(i.ContentSequence);
    if (cs.length) {
      const g = cs.find(x => isScoord(x) && !x.ConceptNameCodeSequence) ?? cs.find(isScoord);
      // OHIF 3.13.2 leaves out a NUM whose content has no SCOORD (seen in the browser,
      // tests/test_viewer_ohif.py, with an earlier SR whose area was inferred from an IMAGE)
      if (!g) return;
      m.coords.push(coordOf(g));
    }
    if (mv) m.labels.push(labelFromMeasuredValue(cname(i), mv));
  });
  return m;
}
const TEXTBOX_ALIASES = { 'Short Axis': 'W: ', 'Long Axis': 'L: ', AREA: 'Area: ', Length: '', CORNERSTONEFREETEXT: '' };
function textBoxLines(labels) {
  const n = Math.min(labels.length, 5);
  const lines = [];
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    const alias = TEXTBOX_ALIASES[l.label];
    lines.push(`${alias !== undefined ? alias : l.label}: ${l.value}`);
  }
  return lines;
}
const display = [];
const imaging = toArray(dataset.ContentSequence).find(i => cname(i).CodeValue === CODES.ImagingMeasurements);
for (const group of toArray(imaging?.ContentSequence).filter(i => cname(i).CodeValue === CODES.MeasurementGroup)) {
  const items = toArray(group.ContentSequence);
  const geometric = items.some(i => isScoord(i) && cname(i).CodeValue !== 'TextPosition');
  const m = geometric ? processTID1410(items) : processNonGeometric(items);
  display.push({ trackingIdentifier: m.trackingIdentifier, lines: textBoxLines(m.labels), allLabels: m.labels.length, coords: m.coords });
}

process.stdout.write(JSON.stringify({ toolState, display, warnings }) + '\n');
console.warn = origWarn;
