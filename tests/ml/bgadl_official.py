"""An independent transcription of the official BGADL code (toantm/BGADL at 5d82f50,
``demo_mnist.py``: ``encoder``, ``generator``, ``discriminator``, ``lenet``, ``init_model``,
``reparameterize``, ``latent_loss``, ``VAEACGAN.train``; ``utils.initialize_weights``), as
written there, for ``tests/ml/test_bgadl*.py``. Only what PyTorch 0.3 needed (``Variable``,
``.cuda()``) and what only draws pictures or logs (``visualize_results``, ``train_hist``, the
last epoch's ``test``) are dropped; test changes are marked.

Two loops: ``official_train``, the VAE part alone (D, C, G(z, y) and the ACGAN terms removed,
marked), which ``generator="vae"`` trains; and ``official_acgan_train``, the whole loop.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim import lr_scheduler


def initialize_weights(net):  # type: ignore[no-untyped-def]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):  # noqa: SIM114 (as written there)
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()
        elif isinstance(m, nn.ConvTranspose2d):  # noqa: SIM114
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()


class encoder(nn.Module):  # noqa: N801 (as named there)
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.output_dim = 100
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 1
        self.conv = nn.Sequential(
            nn.Conv2d(self.input_dim, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 1, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc1 = nn.Sequential(nn.Linear(1, 1024), nn.ReLU())
        self.fc21 = nn.Sequential(nn.Linear(1024, self.output_dim), nn.Sigmoid())
        self.fc22 = nn.Sequential(nn.Linear(1024, self.output_dim), nn.Sigmoid())
        initialize_weights(self)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.conv(x)
        x = self.fc1(x)
        mu = self.fc21(x)
        log_var = self.fc22(x)
        return mu, log_var


def reparameterize(mu, log_var):  # type: ignore[no-untyped-def]
    std = log_var.mul(0.5).exp_()
    eps = std.data.new(std.size()).normal_()  # (Variable() dropped: PyTorch 0.3)
    return eps.mul(std).add_(mu)


def latent_loss(mu, log_var):  # type: ignore[no-untyped-def]
    std = log_var.mul(0.5).exp_()
    mean_sq = mu * mu
    stddev_sq = std * std
    return 0.5 * torch.mean(mean_sq + stddev_sq - torch.log(stddev_sq) - 1)


class generator(nn.Module):  # noqa: N801
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 100 + 10
        self.output_dim = 1
        self.fc = nn.Sequential(
            nn.Linear(self.input_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * (self.input_height // 4) * (self.input_width // 4)),
            nn.BatchNorm1d(128 * (self.input_height // 4) * (self.input_width // 4)),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, self.output_dim, 4, 2, 1),
            nn.Sigmoid(),
        )
        initialize_weights(self)

    def forward(self, input, label):  # type: ignore[no-untyped-def]
        x = torch.cat([input, label], 1)
        x = self.fc(x)
        x = x.view(-1, 128, (self.input_height // 4), (self.input_width // 4))
        x = self.deconv(x)
        return x


def official_train(E, G, data_X, data_Y, epochs, batch_size, order):  # type: ignore[no-untyped-def]  # noqa: N803
    """``VAEACGAN.train``, the E and G updates; ``order`` (test change): each epoch's item
    order, the official one being the stored order (identity)."""
    E_optimizer = optim.Adadelta(E.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    G_optimizer = optim.Adadelta(G.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    E_scheduler = lr_scheduler.StepLR(E_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    G_scheduler = lr_scheduler.StepLR(G_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    MSE_loss = nn.MSELoss()  # noqa: N806
    E.train()
    for epoch in range(epochs):
        G.train()
        E_scheduler.step()  # (official order: the schedulers step first)
        G_scheduler.step()
        X, Y = data_X[order[epoch]], data_Y[order[epoch]]  # noqa: N806
        for iter in range(len(X) // batch_size):
            x_ = X[iter * batch_size : (iter + 1) * batch_size]
            y_vec_ = Y[iter * batch_size : (iter + 1) * batch_size]
            # (z_ = torch.randn(...) removed: it feeds only G(z_, y), left out)
            E_optimizer.zero_grad()
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            output = G(noise, y_vec_)
            ll = latent_loss(mu, log_var)
            E_loss = MSE_loss(output, x_)  # noqa: N806
            E_loss += ll  # noqa: N806
            E_loss.backward(retain_graph=True)
            E_optimizer.step()
            G_optimizer.zero_grad()
            # (G_ = G(z_, y), D_fake, C_fake and their BCE / CE terms removed)
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            G_dec = G(noise, y_vec_)  # noqa: N806
            G_dec_loss = MSE_loss(G_dec, x_)  # noqa: N806
            G_loss = 0.75 * G_dec_loss  # noqa: N806
            G_loss.backward(retain_graph=True)
            G_optimizer.step()
            # (the D and C step removed)


class discriminator(nn.Module):  # noqa: N801
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 1
        self.output_dim = 1
        self.conv = nn.Sequential(
            nn.Conv2d(self.input_dim, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2),
        )
        self.fc1 = nn.Sequential(
            nn.Linear(128 * (self.input_height // 4) * (self.input_width // 4), 1024),
            nn.BatchNorm1d(1024),
            nn.LeakyReLU(0.2),
        )
        self.dc = nn.Sequential(
            nn.Linear(1024, self.output_dim),
            nn.Sigmoid(),
        )
        initialize_weights(self)

    def forward(self, input):  # type: ignore[no-untyped-def]
        x = self.conv(input)
        x = x.view(-1, 128 * (self.input_height // 4) * (self.input_width // 4))
        x = self.fc1(x)
        d = self.dc(x)
        return d


class lenet(nn.Module):  # noqa: N801
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 1
        self.class_num = 10
        self.conv1 = nn.Conv2d(self.input_dim, 6, (5, 5), padding=2)
        self.conv2 = nn.Conv2d(6, 16, (5, 5))
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, self.class_num)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), (2, 2))
        x = x.view(-1, self.num_flat_features(x))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x

    def num_flat_features(self, x):  # type: ignore[no-untyped-def]
        size = x.size()[1:]
        num_features = 1
        for s in size:
            num_features *= s
        return num_features


def official_acgan_train(E, G, D, model, data_X, data_Y, epochs, batch_size, order):  # type: ignore[no-untyped-def]  # noqa: N803
    """``init_model``'s optimizer and ``VAEACGAN.__init__``'s, then ``VAEACGAN.train``;
    ``model`` is the classifier (the official global). ``order`` (test change): each epoch's
    item order, the official one being the stored order (identity)."""
    decay = 3.5 / data_X.size(0)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0, rho=0.9, eps=1e-6, weight_decay=decay)
    model_scheduler = lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5, last_epoch=-1)
    E_optimizer = optim.Adadelta(E.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    G_optimizer = optim.Adadelta(G.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    D_optimizer = optim.Adadelta(D.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    E_scheduler = lr_scheduler.StepLR(E_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    G_scheduler = lr_scheduler.StepLR(G_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    D_scheduler = lr_scheduler.StepLR(D_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    BCE_loss = nn.BCELoss()  # noqa: N806
    CE_loss = nn.CrossEntropyLoss()  # noqa: N806
    MSE_loss = nn.MSELoss()  # noqa: N806
    z_dim = 100
    y_real_, y_fake_ = torch.ones(batch_size, 1), torch.zeros(batch_size, 1)
    E.train()
    D.train()
    model.train()
    losses = None
    for epoch in range(epochs):
        G.train()
        model_scheduler.step()
        E_scheduler.step()
        G_scheduler.step()
        D_scheduler.step()
        X, Y = data_X[order[epoch]], data_Y[order[epoch]]  # noqa: N806  (test change)
        for iter in range(len(X) // batch_size):
            x_ = X[iter * batch_size : (iter + 1) * batch_size]
            y_vec_ = Y[iter * batch_size : (iter + 1) * batch_size]
            z_ = torch.randn((batch_size, z_dim))

            E_optimizer.zero_grad()
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            output = G(noise, y_vec_)
            ll = latent_loss(mu, log_var)
            E_loss = MSE_loss(output, x_)  # noqa: N806
            E_loss += ll  # noqa: N806
            E_loss.backward(retain_graph=True)
            E_optimizer.step()

            G_optimizer.zero_grad()
            G_ = G(z_, y_vec_)  # noqa: N806
            D_fake = D(G_)  # noqa: N806
            C_fake = model(G_)  # noqa: N806
            G_loss = BCE_loss(D_fake, y_real_)  # noqa: N806
            C_fake_loss = CE_loss(C_fake, torch.max(y_vec_, 1)[1])  # noqa: N806
            G_loss += C_fake_loss  # noqa: N806
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            G_dec = G(noise, y_vec_)  # noqa: N806
            G_dec_loss = MSE_loss(G_dec, x_)  # noqa: N806
            G_loss += 0.75 * G_dec_loss  # noqa: N806
            G_loss.backward(retain_graph=True)
            G_optimizer.step()

            D_optimizer.zero_grad()
            optimizer.zero_grad()
            D_real = D(x_)  # noqa: N806
            C_real = model(x_)  # noqa: N806
            D_real_loss = BCE_loss(D_real, y_real_)  # noqa: N806
            C_real_loss = CE_loss(C_real, torch.max(y_vec_, 1)[1])  # noqa: N806
            G_ = G(z_, y_vec_)  # noqa: N806
            D_fake = D(G_)  # noqa: N806
            C_fake = model(G_)  # noqa: N806
            D_fake_loss = BCE_loss(D_fake, y_fake_)  # noqa: N806
            C_fake_loss = CE_loss(C_fake, torch.max(y_vec_, 1)[1])  # noqa: N806
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            G_dec = G(noise, y_vec_)  # noqa: N806
            D_dec = D(G_dec)  # noqa: N806
            C_dec = model(G_dec)  # noqa: N806
            D_dec_loss = BCE_loss(D_dec, y_fake_)  # noqa: N806
            C_dec_loss = CE_loss(C_dec, torch.max(y_vec_, 1)[1])  # noqa: N806
            D_loss = D_real_loss + D_fake_loss + D_dec_loss  # noqa: N806
            C_loss = C_real_loss + C_fake_loss + C_dec_loss  # noqa: N806
            D_loss.backward(retain_graph=True)
            D_optimizer.step()
            C_loss.backward(retain_graph=True)
            optimizer.step()
            losses = (E_loss.item(), G_loss.item(), D_loss.item(), C_loss.item())  # (test change)
    return losses


def visualize_samples(G, y):  # type: ignore[no-untyped-def]  # noqa: N803
    """``VAEACGAN.visualize_results(fix=False)``'s samples, with ``y`` given (test change:
    there, random labels) : G in eval mode on z from the global RNG."""
    G.eval()
    sample_z_ = torch.randn((len(y), 100))
    return G(sample_z_, y)
