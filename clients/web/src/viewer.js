// The 3D viewer: one coloured GLB mesh, turned with the mouse (OrbitControls).
import {
  Box3,
  Color,
  DirectionalLight,
  HemisphereLight,
  PerspectiveCamera,
  Scene,
  SRGBColorSpace,
  Vector3,
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";

export class FaceViewer {
  constructor(container) {
    this.container = container;
    // preserveDrawingBuffer: the canvas can be read back (screenshots, tests).
    this.renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.outputColorSpace = SRGBColorSpace;
    this.renderer.setPixelRatio(window.devicePixelRatio);
    container.appendChild(this.renderer.domElement);

    this.scene = new Scene();
    this.scene.background = new Color(0xf2f2f2);
    this.scene.add(new HemisphereLight(0xffffff, 0x8a8a8a, 2.2));
    // The key light rides with the camera, so the face stays lit however it is turned.
    this.light = new DirectionalLight(0xffffff, 1.2);
    this.camera = new PerspectiveCamera(30, 1, 0.1, 1e5);
    this.camera.add(this.light);
    this.light.position.set(0.5, 0.8, 1);
    this.scene.add(this.camera);

    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true;
    this.controls.addEventListener("change", () => this.render());
    this.mesh = null;
    this.loader = new GLTFLoader();

    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
    this.renderer.setAnimationLoop(() => {
      if (this.controls.update()) this.render(); // damping keeps moving after a drag
    });
  }

  async load(url) {
    const gltf = await this.loader.loadAsync(url);
    if (this.mesh) {
      this.scene.remove(this.mesh);
      this.mesh.traverse((node) => {
        node.geometry?.dispose();
        node.material?.dispose();
      });
    }
    this.mesh = gltf.scene;
    // Centre the head at the origin and frame it, whatever the photo's pixel scale.
    const box = new Box3().setFromObject(this.mesh);
    const centre = box.getCenter(new Vector3());
    const size = box.getSize(new Vector3()).length();
    this.mesh.position.sub(centre);
    this.scene.add(this.mesh);
    const distance = size / (2 * Math.tan((this.camera.fov * Math.PI) / 360));
    this.camera.position.set(0, 0, distance * 1.1);
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.set(0, 0, 0);
    this.controls.update();
    this.render();
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.container;
    if (!width || !height) return;
    this.renderer.setSize(width, height);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
    if (this.mesh) this.container.dataset.rendered = "true";
  }
}
