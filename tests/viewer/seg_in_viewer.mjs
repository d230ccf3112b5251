// Loads a DICOM SEG the way OHIF 3.13.2's cornerstone-dicom-seg extension does
// (adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer, @cornerstonejs/adapters
// 5.6.8 with dcmjs 0.52.0) against the referenced images, and prints JSON on stdout:
//
//   {"segments": [{segmentNumber, label, cielab, rgb, slices: [sopInstanceUID...], pixels}],
//    "warnings": [...]}
//
// usage: node seg_in_viewer.mjs SEG.dcm IMAGES.json   (IMAGES.json as for sr_in_viewer.mjs)
import fs from 'node:fs';
import dcmjs from 'dcmjs';
import { metaData } from '@cornerstonejs/core';
import { adaptersSEG } from '@cornerstonejs/adapters';

const [segPath, imagesPath] = process.argv.slice(2);
const images = JSON.parse(fs.readFileSync(imagesPath, 'utf8'));
const warnings = [];
console.warn = (...args) => { warnings.push(args.map(a => (a instanceof Error ? a.message : typeof a === 'string' ? a : '')).join(' ')); };
console.log = () => {};

const imageIdOf = uid => `spinenode:${uid}`;
const uidOf = imageId => imageId.slice('spinenode:'.length);
const segInstances = {};
function provider(type, imageId) {
  if (typeof imageId !== 'string') return undefined;
  if (segInstances[imageId] && type === 'instance') return segInstances[imageId];
  if (!imageId.startsWith('spinenode:')) return undefined;
  const im = images[uidOf(imageId)];
  if (!im) return undefined;
  const plane = {
    frameOfReferenceUID: im.frameOfReferenceUID, rows: im.rows, columns: im.columns,
    imagePositionPatient: im.imagePositionPatient, rowCosines: im.rowCosines, columnCosines: im.columnCosines,
    imageOrientationPatient: [...im.rowCosines, ...im.columnCosines],
    rowPixelSpacing: im.rowPixelSpacing, columnPixelSpacing: im.columnPixelSpacing,
    pixelSpacing: [im.rowPixelSpacing, im.columnPixelSpacing],
  };
  switch (type) {
    case 'imagePlaneModule': return plane;
    case 'generalImageModule': return { sopInstanceUID: uidOf(imageId) };
    case 'generalSeriesModule': return { seriesInstanceUID: im.seriesInstanceUID, studyInstanceUID: im.studyInstanceUID, modality: 'MR' };
    case 'sopCommonModule': return { sopClassUID: im.sopClassUID, sopInstanceUID: uidOf(imageId) };
    case 'imagePixelModule': return { rows: im.rows, columns: im.columns, bitsAllocated: 16, bitsStored: 16, highBit: 15, pixelRepresentation: 0, samplesPerPixel: 1, photometricInterpretation: 'MONOCHROME2' };
    case 'instance': return {
      SOPInstanceUID: uidOf(imageId), SOPClassUID: im.sopClassUID, SeriesInstanceUID: im.seriesInstanceUID,
      StudyInstanceUID: im.studyInstanceUID, FrameOfReferenceUID: im.frameOfReferenceUID,
      Rows: im.rows, Columns: im.columns, ImagePositionPatient: im.imagePositionPatient,
      ImageOrientationPatient: [...im.rowCosines, ...im.columnCosines],
      PixelSpacing: [im.rowPixelSpacing, im.columnPixelSpacing],
    };
    default: return undefined;
  }
}
metaData.addProvider(provider, 10000);
const origAdd = metaData.addProvider;

const buffer = fs.readFileSync(segPath);
const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
const referencedImageIds = Object.keys(images).map(imageIdOf);

const result = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
  referencedImageIds, arrayBuffer, { metadataProvider: metaData });

const dicomData = dcmjs.data.DicomMessage.readFile(arrayBuffer);
const seg = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
const segSeq = Array.isArray(seg.SegmentSequence) ? seg.SegmentSequence : [seg.SegmentSequence];

// per segment: the referenced slices whose labelmap holds it
const slices = {};
const pixels = {};
const labelmaps = result.labelMapImages || [];
for (const group of labelmaps) {
  for (const img of group) {
    const ref = img.referencedImageId;
    const data = img.getPixelData ? img.getPixelData() : img.voxelManager?.getScalarData?.();
    if (!data) continue;
    const counts = new Map();
    for (let i = 0; i < data.length; i++) if (data[i]) counts.set(data[i], (counts.get(data[i]) || 0) + 1);
    for (const [value, n] of counts) {
      (slices[value] ||= new Set()).add(uidOf(ref));
      pixels[value] = (pixels[value] || 0) + n;
    }
  }
}
const segments = segSeq.map(s => {
  const lab = s.RecommendedDisplayCIELabValue;
  const rgb = lab ? dcmjs.data.Colors.dicomlab2RGB(lab).map(x => Math.round(x * 255)) : null;
  return {
    segmentNumber: s.SegmentNumber, label: s.SegmentLabel, cielab: lab ?? null, rgb,
    slices: [...(slices[s.SegmentNumber] || [])].sort(), pixels: pixels[s.SegmentNumber] || 0,
  };
});
process.stdout.write(JSON.stringify({ segments, warnings, keys: Object.keys(result) }) + '\n');
void origAdd;
