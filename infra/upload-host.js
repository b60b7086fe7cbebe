/**
 * osls plugin: adds the upload host (infra/upload-host.yml) to the packaged template when the
 * stack is asked for it, and nothing at all otherwise, so that a stack without it is exactly
 * the stack it was before the upload host existed.
 *
 *   --param uploadRepository=true           the ECR repository only (first deploy: push into it)
 *   --param uploadImage=<repository>@<digest>  the repository, the service, and every function's
 *                                           SKIFF_UPLOAD_ORIGIN set to the service's endpoint
 *
 * A plugin rather than CloudFormation Conditions: the choice is known when packaging, and a
 * template without the resources is simpler to read and to review than one that carries them
 * switched off.
 */
const DIGEST_REFERENCE = /^[a-z0-9][a-z0-9.-]*(:\d+)?\/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$/;

export default class UploadHost {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      // Before anything is built, so that a wrong image reference fails at once.
      'before:package:initialize': () => this.image(),
      // After serverless.yml's own resources are merged, before the template is written.
      'after:aws:package:finalize:mergeCustomProviderResources': () => this.addUploadHost(),
    };
  }

  /** The image to run, '' for none. */
  image() {
    const image = String(this.serverless.service.custom.uploadHost.image ?? '').trim();
    // A digest, not a tag: CloudFormation rolls the service only when the reference changes,
    // and a digest names exactly the image that was built and tested.
    if (image && !DIGEST_REFERENCE.test(image)) {
      throw new this.serverless.classes.Error(`uploadImage must be <repository>@sha256:<digest> (the pushed image's digest), got "${image}"`);
    }
    return image;
  }

  addUploadHost() {
    const spec = this.serverless.service.custom.uploadHost;
    const image = this.image();
    const repository = image !== '' || String(spec.repository) === 'true';
    if (!repository) return;
    const template = this.serverless.service.provider.compiledCloudFormationTemplate;
    merge(template, 'Resources', spec.RepositoryResources);
    merge(template, 'Outputs', spec.RepositoryOutputs);
    if (!image) return;
    // Numbers from ${param:...} (the upload TTL) stay numbers through variable resolution; the
    // container's environment is strings.
    for (const v of spec.ServiceResources.UploadHostService.Properties.PrimaryContainer.Environment) {
      if (typeof v.Value !== 'object') v.Value = String(v.Value);
    }
    merge(template, 'Resources', spec.ServiceResources);
    merge(template, 'Outputs', spec.ServiceOutputs);
    for (const resource of Object.values(template.Resources)) {
      if (resource.Type !== 'AWS::Lambda::Function') continue;
      const env = (resource.Properties.Environment ??= {});
      (env.Variables ??= {}).SKIFF_UPLOAD_ORIGIN = spec.origin;
    }
  }
}

function merge(template, section, entries) {
  template[section] ??= {};
  for (const [name, value] of Object.entries(entries)) {
    if (name in template[section]) throw new Error(`upload host: ${section}.${name} is already in the template`);
    template[section][name] = value;
  }
}
